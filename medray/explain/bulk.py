"""The bulk explain job: CAM maps for every test image with a Ray Data actor pool.

Actors build the model and its compiled CAM function once, then map whole batches: maps for every
configured method, CAM layer (one per branch) and target class, localisation against the lesion
masks, and the overlay PNGs. The driver streams their output into `maps/part-*.parquet` shards and
overlay files, so its memory stays flat however many images there are. A shard is renamed into
place only after its overlays are written, so after a crash the re-run skips exactly the images of
complete shards.

The checks that cost extra forward passes or extra models (ROAD, the sanity checks)
then run once on a stratified sample of the images (`medray.explain.sample`,
`medray.explain.sample_checks`), written to `sample_checks.parquet`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from medray import console
from medray.console import ProgressBar
from medray.data.pipeline import one_batch_per_block, select_rows
from medray.errors import MedrayError
from medray.explain import checks
from medray.explain.cam import CamExplainer
from medray.explain.gallery import write_galleries
from medray.explain.overlay import resize_map
from medray.explain.panels import encode_overlay_table, write_volume_maps
from medray.explain.sample import StratifiedSampler
from medray.explain.sample_checks import SAMPLE_CHECKS, sample_checks
from medray.explain.scorecard import score_methods, write_scorecard
from medray.filenames import safe_filename
from medray.models.actor import ModelActor, UserModelSpec
from medray.task import Task


CHECK_COLUMNS = ("pointing_game", "energy_in_lesion", "lesion_share")
MAPS_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("label", pa.int64()),
    ("prediction", pa.int64()),
    ("target", pa.int64()),
    ("confidence", pa.float32()),
    ("probabilities", pa.list_(pa.float32())),
    # the image's labels: [class index] (single-label) or the label vector of 1, 0, -1 (multi-label)
    ("labels", pa.list_(pa.int64())),
    ("method", pa.string()),
    ("layer", pa.string()),
    # the map in its image's own geometry (cam_height x cam_width = the scan's height x width, row-major),
    # resized from feature resolution as the overlay shows it, so that it lies on the scan
    ("cam", pa.list_(pa.float16())),
    ("cam_height", pa.int32()),
    ("cam_width", pa.int32()),
    # a volume's map has cam_depth slices of cam_height x cam_width; an image's map has 1
    ("cam_depth", pa.int32()),
    ("empty", pa.bool_()),
    ("overlay_file", pa.string()),
    *((name, pa.float64()) for name in CHECK_COLUMNS),
])
SHARD = re.compile(r"^part-(\d+)\.parquet$")
SETTINGS = "settings.json"


@dataclass(frozen=True)
class ExplainOutcome:
    maps_dir: Path
    overlay_dir: Path | None
    images: int  # test images with maps, resumed ones included
    resumed: int  # images whose maps an earlier, interrupted run had already written
    rows: int  # maps: images x methods x CAM layers x target classes
    empty_maps: int
    scores: dict  # per method: the checks' summary (also in checks.json)
    galleries: list[Path]


class CamActor(ModelActor):
    """`task` (medray.task) says which maps each image gets and what the maps differentiate;
    `thresholds`: per label, chosen on the validation split (multi-label tasks)."""

    def __init__(self, model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task, methods: list[str],
                 target: str, overlays: bool, checks: bool, thresholds: list[float] | None = None,
                 pointing_tolerance_px: float = 0.0):
        super().__init__(model_bytes, backbone_name)
        self.task, self.class_names, self.target = task, list(task.class_names), target
        self.thresholds = None if thresholds is None else np.asarray(thresholds, np.float32)
        self.overlays, self.checks = overlays, checks
        self.pointing_tolerance_px = pointing_tolerance_px
        self.explainer = CamExplainer(self.model, self.cam_layers, methods, target=self.cam_target(task))

    def __call__(self, batch: dict) -> pa.Table:
        images = self.model_input(batch["pixels"])
        labels = np.asarray(batch["label"])
        explained = self.explainer(images, self.task.cam_slots(self.target, labels))
        targets, probabilities = explained.targets, explained.probabilities
        keep = self.task.keep_maps(self.target, labels, targets, probabilities, self.thresholds)
        truth = self.task.map_truth(labels, targets)
        predicted = self.task.map_prediction(probabilities, targets, self.thresholds)
        parts = []
        for (method, layer), maps in explained.maps.items():
            for slot in range(targets.shape[1]):
                kept = keep[:, slot]
                if not kept.any():
                    continue
                slot_maps, slot_targets = maps[kept, slot], targets[kept, slot]
                count = int(kept.sum())
                sizes = list(zip(batch["height"][kept].tolist(), batch["width"][kept].tolist()))
                columns = {
                    "row_id": batch["row_id"][kept].astype(str), "label": truth[kept, slot],
                    "prediction": predicted[kept, slot], "target": slot_targets,
                    "labels": [np.atleast_1d(label) for label in labels[kept]],
                    "confidence": probabilities[kept].max(axis=1),
                    "probabilities": probabilities[kept], "method": [method] * count,
                    "layer": [layer] * count, "empty": checks.is_empty(slot_maps),
                    "cam": self._stored_maps(slot_maps, sizes),
                    **self._localisation(batch, kept, slot_maps, slot_targets, images.shape[1:-1]),
                }
                if self.overlays:
                    columns["overlay_file"] = [
                        self._overlay_file(method, layer, folder, row_id, target) for folder, row_id, target in
                        zip(self.task.overlay_folders(columns["label"], columns["prediction"], slot_targets),
                            columns["row_id"], slot_targets)]
                    if slot_maps.ndim == 4:  # volumes: panels of the model-size volume (medray.explain.panels)
                        columns["overlay_pixels"] = [pixels.tobytes() for pixels in batch["pixels"][kept]]
                        columns["overlay_sizes"] = [batch["pixels"].shape[1:4]] * count
                    else:
                        columns["overlay_pixels"] = list(self._originals(batch)[kept])
                        columns["overlay_sizes"] = sizes
                parts.append(maps_table(columns))
        return pa.concat_tables(parts) if parts else MAPS_SCHEMA.empty_table()

    @staticmethod
    def _stored_maps(maps: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """An image's map resized to the scan's own (height, width); a volume's (N, d, h, w) maps as
        they are (`write_volume_maps` upsamples them to the input volume)."""
        if maps.ndim == 4:
            return list(maps)
        return [resize_map(cam, height, width) for cam, (height, width) in zip(maps, sizes)]

    @staticmethod
    def _originals(batch: dict) -> np.ndarray:
        """Each image at its own size, as bytes: the overlay is drawn on the scan, not the model's square input."""
        if "original" not in batch:
            raise ValueError("explain.overlays needs the decoded rows read with originals=True "
                             "(medray.data.pipeline.read_split)")
        return batch["original"]

    def _localisation(self, batch: dict, kept: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                      size: tuple[int, ...]) -> dict:
        """Cheap, so on every image that has a lesion mask: the image's mask, or with one mask per
        label (N, K, H, W) the mask of the label the map explains. Scored at the model's input size,
        where the masks were resized exactly as their images: map and mask in the same geometry
        whatever the scan's own shape."""
        if not self.checks or "mask" not in batch:
            return {}
        masks = batch["mask"][kept]
        if masks.ndim == maps.ndim + 1:  # one mask per label
            masks = masks[np.arange(len(masks)), targets]
        upsampled = checks.upsample_maps(maps, size)
        return {"pointing_game": checks.pointing_game(upsampled, masks, self.pointing_tolerance_px),
                "energy_in_lesion": checks.energy_in_lesion(upsampled, masks),
                "lesion_share": checks.lesion_share(masks)}

    def _overlay_file(self, method: str, layer: str, label: int, row_id: str, target: int) -> str:
        name = safe_filename(row_id)
        if self.task.names_target_in_file(self.target):
            name += f"-{safe_filename(self.class_names[int(target)])}"
        if len(self.explainer.layers) > 1:
            name += f"-{safe_filename(layer)}"
        return f"{safe_filename(method)}/{safe_filename(self.class_names[int(label)])}/{name}.png"


def maps_table(columns: dict) -> pa.Table:
    """`columns["cam"]`: one map per row, each in its own image's (height, width) geometry, or a
    volume's (depth, height, width) at the model's input size."""
    maps = columns["cam"]
    count = len(maps)
    arrays = {
        **{name: columns[name] for name in ("row_id", "method", "layer")},
        **{name: np.asarray(columns[name], np.int64) for name in ("label", "prediction", "target")},
        "confidence": np.asarray(columns["confidence"], np.float32),
        "probabilities": list(np.asarray(columns["probabilities"], np.float32)),
        "labels": [np.asarray(labels, np.int64) for labels in columns["labels"]],
        "cam": [np.asarray(cam, np.float16).ravel() for cam in maps],
        "cam_height": np.asarray([np.shape(cam)[-2] for cam in maps], np.int32),
        "cam_width": np.asarray([np.shape(cam)[-1] for cam in maps], np.int32),
        "cam_depth": np.asarray([np.shape(cam)[0] if np.ndim(cam) == 3 else 1 for cam in maps], np.int32),
        "empty": np.asarray(columns["empty"], bool),
        "overlay_file": columns.get("overlay_file", [None] * count),
        **{name: columns.get(name, np.full(count, np.nan)) for name in CHECK_COLUMNS},
    }
    table = pa.table({field.name: pa.array(arrays[field.name], field.type) for field in MAPS_SCHEMA},
                     schema=MAPS_SCHEMA)
    if "overlay_pixels" in columns:  # the original (H, W) gray or (H, W, 3) RGB uint8, for `encode_overlays`
        table = table.append_column("overlay_pixels", pa.array(columns["overlay_pixels"], pa.binary()))
        # an image's own (H, W), or a volume's (D, H, W)
        sizes = columns["overlay_sizes"]
        names = ("overlay_depth", "overlay_height", "overlay_width") if sizes and len(sizes[0]) == 3 else (
            "overlay_height", "overlay_width")
        for axis, name in enumerate(names):
            table = table.append_column(name, pa.array([size[axis] for size in sizes], pa.int32()))
    return table


def explain_split(decoded: ray.data.Dataset, model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task,
                  explain_config, out_dir: Path,
                  on_shard: Callable[[Path], None] | None = None, rows: int | None = None,
                  read_rows: Callable[[frozenset[str]], ray.data.Dataset] | None = None,
                  thresholds: list[float] | None = None) -> ExplainOutcome:
    """Maps for every row of `decoded` into `out_dir`, as `task` (medray.task) asks for them
    (`thresholds`: per label, from the validation split, for a multi-label task); rows of complete shards from an earlier,
    interrupted run into the same `out_dir` are skipped. `on_shard` is called after each shard;
    `rows` (the rows of `decoded`, if known) sizes the console's progress bar. `read_rows(row_ids)`
    reads and decodes only those rows of the same split, for the checks' sample; without it the
    sample is filtered out of a second pass over `decoded`."""
    methods = explain_config.methods
    if not methods:
        raise MedrayError("explain.method is an empty list; name at least one of gradcam, gradcam++, "
                          "hirescam, scorecam")
    maps_dir = out_dir / "maps"
    maps_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out_dir / "overlays" if explain_config.overlays else None
    done, next_index = completed_shards(maps_dir)
    class_names = list(task.class_names)
    settings = explain_settings(model_bytes, class_names, explain_config) | {"task": task.kind,
                                                                             "thresholds": thresholds}
    check_same_settings(maps_dir, settings, resuming=bool(done))
    todo = decoded if not done else decoded.map_batches(select_rows, fn_kwargs={"row_ids": done, "keep": False})
    mapped = cam_dataset(todo, model_bytes, backbone_name, task, explain_config, thresholds)
    progress = ProgressBar("explain", rows, done=len(done))
    started = time.perf_counter()
    for block in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
        progress.advance(len(set(block["row_id"].to_pylist())))
        for table in split_by_images(block, explain_config.batch_size):
            if "overlay" in table.column_names:
                write_overlays(table, overlay_dir)
                table = write_volume_maps(table.drop_columns(["overlay"]), out_dir)
            shard = maps_dir / f"part-{next_index:06d}.parquet"
            partial = maps_dir / f".{shard.name}.tmp"
            pq.write_table(table, partial)
            os.replace(partial, shard)  # atomic: a shard is either complete or absent
            next_index += 1
            if on_shard is not None:
                on_shard(shard)
    progress.close()
    maps_seconds = time.perf_counter() - started
    sample_path = out_dir / SAMPLE_CHECKS
    if explain_config.checks and explain_config.check_sample and not sample_path.is_file():
        started = time.perf_counter()
        check_sample(decoded, maps_dir, model_bytes, backbone_name, task, explain_config, sample_path, read_rows)
        console.say(f"explain: maps of every image {maps_seconds:.0f} s, checks on the sample "
                    f"{time.perf_counter() - started:.0f} s (per method and map: the cost lines of the summary)")
    scores = score_methods(maps_dir, sample_path if sample_path.is_file() else None, class_names,
                           per_target=task.multi_label)
    write_scorecard(scores, out_dir)
    galleries = (write_galleries(maps_dir, overlay_dir, task, out_dir / "galleries",
                                 explain_config.gallery_size, sample_path if sample_path.is_file() else None)
                 if overlay_dir is not None and explain_config.gallery_size else [])
    return ExplainOutcome(maps_dir, overlay_dir, images=max((score["images"] for score in scores.values()), default=0),
                          resumed=len(done), rows=sum(score["maps"] for score in scores.values()),
                          empty_maps=sum(score["empty_maps"] for score in scores.values()),
                          scores=scores, galleries=galleries)


def cam_dataset(decoded: ray.data.Dataset, model_bytes: bytes, backbone_name: str | UserModelSpec, task: Task,
                explain_config, thresholds: list[float] | None = None) -> ray.data.Dataset:
    """The heterogeneous pipeline: reading and decoding stay in CPU tasks (as many as the cluster's
    CPUs allow), the CAM runs in a pool of `explain.concurrency` actors that each request
    `explain.gpus_per_actor` GPUs, so on a GPU cluster many CPU decoders feed the GPU actors; the
    overlay PNGs are encoded in CPU tasks again."""
    mapped = one_batch_per_block(decoded, explain_config.batch_size).map_batches(
        CamActor,
        fn_constructor_kwargs={
            "model_bytes": model_bytes, "backbone_name": backbone_name, "task": task,
            "methods": explain_config.methods, "target": explain_config.target, "overlays": explain_config.overlays,
            "checks": explain_config.checks, "thresholds": thresholds,
            "pointing_tolerance_px": explain_config.pointing_tolerance_px},
        batch_size=explain_config.batch_size,
        compute=ray.data.ActorPoolStrategy(size=explain_config.concurrency),
        num_gpus=explain_config.gpus_per_actor or None,
    )
    # Ray Data's downstream-capacity backpressure pauses an operator whose unread output exceeds
    # twice what its consumer holds. The driver takes one small block of maps at a time, so the
    # CAM actors sat idle 0.1-0.3 s between batches: 20,000 MobileNetV2 maps streamed at 310-360
    # maps/s instead of 510-540 (jobs/benchmarks/README.md). Ray Data's object-store budgets still
    # bound what each operator buffers. (The context is shared with `decoded`, this job's input.)
    mapped.context.downstream_capacity_backpressure_ratio = None
    if not explain_config.overlays:
        return mapped
    return mapped.map_batches(encode_overlay_table, fn_kwargs={"colorbar": explain_config.colorbar},
                              batch_size=None, batch_format="pyarrow")


def explain_settings(model_bytes: bytes, class_names: list[str], explain_config) -> dict:
    """What a map depends on. Shards written under other settings must not be mixed with new ones."""
    return {"model_sha256": hashlib.sha256(model_bytes).hexdigest(), "class_names": list(class_names),
            "method": explain_config.methods, "target": explain_config.target,
            "checks": explain_config.checks, "deletion_steps": explain_config.deletion_steps,
            "check_sample": explain_config.check_sample, "sample_seed": explain_config.sample_seed,
            "cascade_steps": explain_config.cascade_steps,
            "label_randomisation_epochs": explain_config.label_randomisation_epochs,
            "overlays": explain_config.overlays, "colorbar": explain_config.colorbar,
            "pointing_tolerance_px": explain_config.pointing_tolerance_px}


def check_same_settings(maps_dir: Path, settings: dict, resuming: bool) -> None:
    """Resume only the job that was interrupted: same model, methods, targets and checks."""
    path = maps_dir.parent / SETTINGS  # beside maps/, which must hold parquet files only
    if resuming and path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(key for key in settings if before.get(key) != settings[key])
        if changed:
            raise MedrayError(
                f"{maps_dir.parent} holds maps made with other settings ({', '.join(changed)} changed); "
                "resuming would mix them. Delete that folder to start afresh, or explain into a new run folder")
    path.write_text(json.dumps(settings, indent=2))


def check_sample(decoded: ray.data.Dataset, maps_dir: Path, model_bytes: bytes, backbone_name: str | UserModelSpec,
                 task: Task, explain_config, path: Path,
                 read_rows: Callable[[frozenset[str]], ray.data.Dataset] | None = None) -> None:
    """ROAD and the sanity checks on the stratified sample, into `path` (atomically:
    a resumed job redoes them only if they had not been written)."""
    sampler = StratifiedSampler(explain_config.check_sample, explain_config.sample_seed)
    for shard in sorted(maps_dir.glob("part-*.parquet")):
        table = pq.read_table(shard, columns=["row_id", "label", "prediction"])
        row_ids = table["row_id"].to_numpy(zero_copy_only=False)
        first = np.unique(row_ids, return_index=True)[1]  # one map per image
        sampler.add(row_ids[first], table["label"].to_numpy()[first], table["prediction"].to_numpy()[first])
    chosen = frozenset(sampler.draw())
    if not chosen:
        return
    sampled = (read_rows(chosen) if read_rows is not None else
               decoded.map_batches(select_rows, fn_kwargs={"row_ids": chosen}))
    sampled = sampled.select_columns(["row_id", "pixels", "label"])
    batches = list(sampled.iter_batches(batch_size=None, batch_format="numpy"))
    rows = {name: np.concatenate([batch[name] for batch in batches]) for name in ("row_id", "pixels", "label")}
    # Blocks arrive in any order; sorted, the seeded label permutation and random orders repeat.
    order = np.argsort(rows["row_id"].astype(str), kind="stable")
    rows = {name: values[order] for name, values in rows.items()}
    checks_task = ray.remote(sample_checks).options(num_gpus=explain_config.gpus_per_actor or None)
    table, steps, cost = ray.get(checks_task.remote(model_bytes, backbone_name, task, rows, explain_config))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"cascade_steps": json.dumps(steps).encode(),
                                           b"cost_seconds": json.dumps(cost).encode()})
    partial = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, partial)
    os.replace(partial, path)


def split_by_images(table: pa.Table, images: int) -> list[pa.Table]:
    """Ray Data merges the actors' outputs into large blocks; shards of `images` images each
    (all of an image's maps in the same shard) keep what a crash can lose small."""
    row_ids = list(dict.fromkeys(table["row_id"].to_pylist()))
    return [table.filter(pc.is_in(table["row_id"], value_set=pa.array(row_ids[start:start + images])))
            for start in range(0, len(row_ids), images)]


def completed_shards(maps_dir: Path) -> tuple[frozenset[str], int]:
    """The row ids already written by complete shards, and the next shard's number.
    Partial files of a crashed write are removed."""
    for partial in maps_dir.glob(".part-*.tmp"):
        partial.unlink()
    shards = sorted(path for path in maps_dir.iterdir() if SHARD.match(path.name))
    done = frozenset(row_id for path in shards for row_id in pq.read_table(path, columns=["row_id"])["row_id"].to_pylist())
    next_index = max((int(SHARD.match(path.name).group(1)) for path in shards), default=-1) + 1
    return done, next_index


def write_overlays(table: pa.Table, overlay_dir: Path) -> None:
    for relative, png in zip(table["overlay_file"].to_pylist(), table["overlay"].to_pylist()):
        path = overlay_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
