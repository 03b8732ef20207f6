"""`medray explain --model FILE`: the bulk explain job for a Keras classifier trained elsewhere.

The model file is loaded and checked on the driver first (Lambda layers, input and output shapes,
class names, CAM layer), so every mistake is one line before Ray starts. Then the same actor pool
as for medray's own models computes predictions, maps, overlays, galleries and checks, into a new
folder under output.dir. Images with labels are explained from the dataset's test split and scored;
images without labels are all explained and filed under their predicted class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medray import console
from medray.config import to_yaml
from medray.data.sources import has_labels, row_sources
from medray.errors import MedrayError
from medray.evaluate import compute_metrics, predictions_from_maps
from medray.explain.bulk import ExplainOutcome, explain_split
from medray.explain.graph import CamGraph
from medray.explain.job import describe
from medray.job import prepare_job
from medray.models.actor import UserModelSpec
from medray.models.preprocessing import DECLARED_PREPROCESSING, ModelInput
from medray.models.registry import get_backbone
from medray.models.user_model import check_class_names, load_user_model, model_shape
from medray.report import build_report
from medray.report.unlabelled import build_unlabelled_report

NO_LABELS = ("no accuracy figures: the images have no labels; predictions.parquet holds each image's "
             "predicted class, and overlays and galleries are grouped by it")


@dataclass(frozen=True)
class ModelExplainOutcome:
    out_dir: Path
    explained: ExplainOutcome
    labelled: bool
    cam_layers: tuple[str, ...]


def explain_model(config, model_path: str | Path | None = None,
                  class_names_from: str | Path | None = None) -> ModelExplainOutcome:
    """Explain `model_path` (or explain.model) over config.data; class names from data.class_names,
    the labelled data itself, or the run folder `class_names_from` (its data.json)."""
    from medray.run_folder import create_run_folder, mark_finished

    path = Path(model_path or config.explain.model or "")
    if not (model_path or config.explain.model):
        raise MedrayError("medray explain needs --run <run folder> or --model <.keras or .h5 file> "
                          "(or explain.model in the config)")
    model = load_user_model(path, config.explain.trust_model_code)
    shape = model_shape(model, path)
    if config.model.input_size and config.model.input_size != shape.input_size:
        raise MedrayError(f"{path}: the model takes {shape.input_size} px images but model.input_size="
                          f"{config.model.input_size}; remove model.input_size, medray reads the size from the model")
    labelled = has_labels(config.data)
    if config.explain.target == "true" and not labelled:
        raise MedrayError(f"explain.target=true: the images in {config.data.path} have no labels; use predicted or all")
    graph = CamGraph(model, config.explain.cam_layer)
    cam_layers = graph.layers
    for warning in graph.warnings:
        console.warn(warning)
    if labelled:
        job = prepare_job(config, input_size=shape.input_size)
        class_names = job.source.class_names
    else:
        class_names = config.data.class_names or run_class_names(class_names_from, path)
        job = prepare_job(config, input_size=shape.input_size, unlabelled_classes=class_names)
    check_class_names(class_names, shape, path)
    folder = create_run_folder(config, resumable=False)  # in object storage too: written here, uploaded at the end
    out_dir = folder.local
    (out_dir / "config.yaml").write_text(to_yaml(config))
    # Bad rows refused or skipped and counted, as in a run.
    job = job.start(out_dir)
    if labelled:
        (out_dir / "data.json").write_text(json.dumps(job.data_report, indent=2))
    spec = UserModelSpec(path.suffix.lower(), ModelInput(shape.channels, preprocessing(config.explain.preprocess)),
                         cam_layers, config.explain.trust_model_code)
    test = job.read_split("test", originals=config.explain.overlays)  # overlays are drawn on the scans
    explained = explain_split(test, path.read_bytes(), spec, job.task, config.explain,
                              out_dir / "explain", read_rows=lambda row_ids: job.read_split("test", row_ids))
    predictions = predictions_from_maps(explained.maps_dir, job.task)
    predictions.insert(1, "source", predictions["row_id"].map(row_sources(job.source)))
    predictions.to_parquet(out_dir / "predictions.parquet", index=False)
    lines = [describe(explained).rstrip("\n")]
    if labelled:
        (out_dir / "metrics.json").write_text(json.dumps(compute_metrics(predictions, job.task), indent=2))
    else:
        lines.append(NO_LABELS)
        if job.skipped:
            lines.append(f"images left out as unreadable: {job.skipped} (data.on_bad_image: skip; "
                         f"see {out_dir / 'manifest.parquet'})")
    facts = {"model": str(path.resolve()), "input_size": shape.input_size, "channels": shape.channels,
             "class_names": class_names, "preprocess": config.explain.preprocess, "cam_layers": list(cam_layers),
             "cam_layer_warnings": graph.warnings, "labelled": labelled}
    (out_dir / "model.json").write_text(json.dumps(facts, indent=2))
    lines += [f"model     {path} (CAM layer {', '.join(cam_layers)})", f"predictions {out_dir / 'predictions.parquet'}"]
    if config.report.enabled:  # a labelled split gets the run report: it reads predictions.parquet and data.json
        report = (build_report(out_dir, config.report.examples_per_class) if labelled
                  else build_unlabelled_report(out_dir, class_names, facts))
        lines.append(f"report    {report}")
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    mark_finished(folder)
    return ModelExplainOutcome(out_dir, explained, labelled, cam_layers)


def preprocessing(name: str):
    """explain.preprocess -> the numpy function of [0, 255] pixels the model expects."""
    return DECLARED_PREPROCESSING[name] if name in DECLARED_PREPROCESSING else get_backbone(name).model_input.preprocess


def run_class_names(run_dir: str | Path | None, model_path: Path) -> list[str]:
    if run_dir is None:
        raise MedrayError(f"{model_path}: the images have no labels, so name the model's classes in "
                          "data.class_names (or pass --run with a medray run folder that has them)")
    report = Path(run_dir) / "data.json"
    if not report.is_file():
        raise MedrayError(f"{report} does not exist; pass --run with the folder of a finished `medray run`")
    return list(json.loads(report.read_text())["class_names"])
