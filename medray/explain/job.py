"""`medray explain`: the bulk explain job for a finished run, reading that run's model.keras and
writing into its folder (`<run>/explain/`). Re-running it after a crash resumes."""

from __future__ import annotations

from pathlib import Path

from medray.task import make_task
from medray import console, storage
from medray.cluster import connect
from medray.data.manifest import prepare_source
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.errors import MedrayError
from medray.explain.bulk import ExplainOutcome, explain_split
from medray.explain.scorecard import format_scorecard
from medray.models.registry import get_backbone
from medray.run_folder import open_run_folder, publish


def explain_run(config, run_location: str | Path) -> ExplainOutcome:
    """`run_location`: a local run folder or a URI; a remote one is read into a scratch copy and
    its explain/ folder uploaded back when done."""
    folder = open_run_folder(str(run_location))
    run_dir = folder.local
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise MedrayError(f"{storage.join(folder.location, 'model.keras')} does not exist; pass --run with the "
                          "folder of a finished `medray run` (it holds model.keras)")
    backbone = get_backbone(config.model.backbone)
    image_size = config.model.input_size or backbone.input_size
    source = discover(config.data)
    console.keep_log_in(run_dir / "logs")
    connect(config.scaling)
    # The run's own manifest: the same rows as at training time, bad ones skipped or refused alike.
    source, _ = prepare_source(source, config.data, run_dir)
    test = read_split(source, "test", image_size, config.data)
    task = make_task(config.task, source.class_names)
    outcome = explain_split(test, model_path.read_bytes(), backbone.name, task, config.explain,
                            run_dir / "explain", on_shard=None, rows=source.num_rows("test"),
                            read_rows=lambda row_ids: read_split(source, "test", image_size, config.data, row_ids))
    (run_dir / "explain" / "summary.txt").write_text(describe(outcome))
    publish(folder, "explain")
    return outcome


def describe(outcome: ExplainOutcome) -> str:
    lines = [f"explained {outcome.images} test images ({outcome.resumed} from an earlier, interrupted run): "
             f"{outcome.rows} maps, {outcome.empty_maps} empty",
             format_scorecard(outcome.scores),
             f"maps      {outcome.maps_dir}"]
    if outcome.overlay_dir is not None:
        lines.append(f"overlays  {outcome.overlay_dir}")
    if outcome.galleries:
        lines.append(f"galleries {outcome.galleries[0].parent}")
    return "\n".join(lines) + "\n"
