"""The bulk explain job: Grad-CAM for every test image with a Ray Data actor pool.

Actors build the model and its compiled CAM function once, then map whole batches. The driver
streams their output to `maps.parquet` and overlay PNGs, so memory stays flat however many
images there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from medray.explain.cam import CamExplainer
from medray.explain.overlay import overlay_png
from medray.filenames import safe_filename
from medray.models.actor import ModelActor

MAPS_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("label", pa.int64()),
    ("prediction", pa.int64()),
    ("target", pa.int64()),
    ("confidence", pa.float32()),
    ("method", pa.string()),
    ("cam", pa.list_(pa.float16())),
    ("cam_height", pa.int32()),
    ("cam_width", pa.int32()),
])


@dataclass(frozen=True)
class ExplainOutcome:
    maps_path: Path
    overlay_dir: Path | None
    rows: int
    empty_maps: int


class CamActor(ModelActor):
    def __init__(self, model_bytes: bytes, backbone_name: str, method: str, target: str, overlays: bool):
        super().__init__(model_bytes, backbone_name)
        self.explainer = CamExplainer(self.model, self.backbone.cam_layers[0], method)
        self.method, self.target, self.overlays = method, target, overlays

    def __call__(self, batch: dict) -> dict:
        targets = batch["label"] if self.target == "true" else None
        maps, probabilities = self.explainer(self.model_input(batch["pixels"]), targets)
        predictions = probabilities.argmax(axis=1)
        result = {
            "row_id": batch["row_id"],
            "label": batch["label"],
            "prediction": predictions,
            "target": batch["label"] if self.target == "true" else predictions,
            "confidence": probabilities.max(axis=1).astype(np.float32),
            "cam": maps.astype(np.float16),
        }
        if self.overlays:
            result["overlay"] = np.array(
                [overlay_png(pixels, cam) for pixels, cam in zip(batch["pixels"], maps)], dtype=object)
        return result


def explain_split(decoded: ray.data.Dataset, model_bytes: bytes, backbone_name: str,
                  class_names: list[str], explain_config, out_dir: Path) -> ExplainOutcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out_dir / "overlays" if explain_config.overlays else None
    mapped = decoded.map_batches(
        CamActor,
        fn_constructor_kwargs={"model_bytes": model_bytes, "backbone_name": backbone_name,
                               "method": explain_config.method, "target": explain_config.target,
                               "overlays": explain_config.overlays},
        batch_size=explain_config.batch_size,
        compute=ray.data.ActorPoolStrategy(size=explain_config.concurrency),
    )
    rows = empty = 0
    maps_path = out_dir / "maps.parquet"
    with pq.ParquetWriter(maps_path, MAPS_SCHEMA) as writer:
        for batch in mapped.iter_batches(batch_size=None):
            writer.write_table(maps_table(batch, explain_config.method))
            if overlay_dir is not None:
                write_overlays(batch, class_names, overlay_dir)
            rows += len(batch["row_id"])
            empty += int((batch["cam"].reshape(len(batch["cam"]), -1).max(axis=1) == 0).sum())
    return ExplainOutcome(maps_path, overlay_dir, rows, empty)


def maps_table(batch: dict, method: str) -> pa.Table:
    count, height, width = batch["cam"].shape
    return pa.table({
        "row_id": pa.array(batch["row_id"].astype(str)),
        "label": pa.array(batch["label"], pa.int64()),
        "prediction": pa.array(batch["prediction"], pa.int64()),
        "target": pa.array(batch["target"], pa.int64()),
        "confidence": pa.array(batch["confidence"], pa.float32()),
        "method": pa.array([method] * count),
        "cam": pa.array(list(batch["cam"].reshape(count, -1)), pa.list_(pa.float16())),
        "cam_height": pa.array([height] * count, pa.int32()),
        "cam_width": pa.array([width] * count, pa.int32()),
    }, schema=MAPS_SCHEMA)


def write_overlays(batch: dict, class_names: list[str], overlay_dir: Path) -> None:
    for row_id, label, png in zip(batch["row_id"], batch["label"], batch["overlay"]):
        folder = overlay_dir / safe_filename(class_names[int(label)])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{safe_filename(row_id)}.png").write_bytes(png)
