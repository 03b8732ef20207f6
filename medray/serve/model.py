"""The model a Serve replica answers with: loaded once, then whole batches of decoded images.

Everything between the request's bytes and the answer is the batch job's own code: the bytes are
decoded and resized by `decode_for_model` (the Ray Data readers' function), fed through the
backbone's `to_model_input`, and probabilities and maps come from `CamExplainer` with the run's
task and CAM target; predictions from `task.predictions` with the run's thresholds. So an image
served over HTTP gets the probabilities and the map the bulk explain job wrote for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medray import storage
from medray.data.decode import decode_for_model
from medray.errors import MedrayError
from medray.models.preprocessing import ModelInput, to_model_input
from medray.models.user_model import SUFFIXES
from medray.serve.settings import ServeSettings
from medray.task import SingleLabelTask, Task, make_task

# Characters of the model file's SHA-256 that name its version.
VERSION_CHARS = 16
# The maps an answer carries: those of the batch job's explain.target.
EXPLAINED = "predicted"


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray  # (K,) per class or label
    prediction: np.ndarray  # () class index, or (K,) 0/1 per label
    # per class or label explained (the task's choice, as in the batch job: the predicted class, or
    # each label predicted present plus the top label), per CAM layer: (h, w) float32 in [0, 1] at
    # the layer's resolution; empty without explain
    maps: dict[int, dict[str, np.ndarray]]
    # (K,) the probabilities after the run's temperature scaling (calibration.json), as the batch
    # job's `calibrated_probabilities` column; None for a run without calibration or a model file
    calibrated: np.ndarray | None = None


@dataclass(frozen=True)
class Loaded:
    model: object  # a Keras classifier
    model_bytes: bytes
    task: Task
    image_size: int
    color: str  # "gray" or "rgb": how requests are decoded
    model_input: ModelInput
    cam_layers: tuple[str, ...] | str | None  # None: found from the graph
    target: object  # CamTarget, or None to read it from the head
    thresholds: list[float] | None
    max_pixels: int
    preprocess: str  # the name of `model_input.preprocess`, for /info
    calibration: dict | None = None  # the run's calibration.json


def is_model_file(location: str) -> bool:
    return Path(storage.name(location)).suffix.lower() in SUFFIXES


def check_model_location(settings: ServeSettings) -> None:
    """On the driver, before Serve starts: the model (or run folder) exists and has what serving
    needs; MedrayError naming the location otherwise. Loading itself happens in each replica."""
    location = storage.normalise(settings.model)
    if is_model_file(location):
        if settings.class_names is None:
            raise MedrayError(f"{location}: a model file needs its classes in output order; set args.class_names "
                              "in the serve config (or --set class_names=[a,b])")
        if storage.info(location, "model").type.name != "File":
            raise storage.missing(location, "model", "pass a .keras or .h5 file or a run folder")
        return
    for name in ("model.keras", "config.yaml", "data.json"):
        if storage.info(storage.join(location, name), "model").type.name != "File":
            raise MedrayError(f"{storage.join(location, name)} does not exist; pass the folder of a finished "
                              "`medray run` (it holds model.keras), or a .keras or .h5 file")


class ServedModel:
    """A run's model (local or in a bucket) or a model file, with its task, input and explainers."""

    def __init__(self, settings: ServeSettings):
        from medray.explain.cam import CamExplainer

        location = storage.normalise(settings.model)
        loaded = _load_model_file(location, settings) if is_model_file(location) else _load_run(location, settings)
        self.model, self.task, self.image_size, self.color = loaded.model, loaded.task, loaded.image_size, loaded.color
        self.model_input, self.thresholds, self.max_pixels = loaded.model_input, loaded.thresholds, loaded.max_pixels
        self.preprocess, self.calibration = loaded.preprocess, loaded.calibration
        self.run_id = Path(storage.name(location)).stem if is_model_file(location) else storage.name(location)
        self.version = hashlib.sha256(loaded.model_bytes).hexdigest()[:VERSION_CHARS]
        self.methods = tuple(settings.methods)
        self.explainers = {method: CamExplainer(self.model, loaded.cam_layers, method, target=loaded.target)
                           for method in self.methods}
        self.cam_layers = self.explainers[self.methods[0]].layers

    def decode(self, content: bytes, where: str) -> np.ndarray:
        """Image bytes (PNG, JPEG, DICOM, ...) -> (size, size[, 3]) uint8; BadImage naming `where`."""
        return decode_for_model(content, self.image_size, self.max_pixels, where, self.color)

    def predict(self, pixels: np.ndarray, method: str | None = None) -> list[Prediction]:
        """(N, size, size[, 3]) uint8 decoded images -> N predictions; `method` (one of the served
        methods) adds the maps the batch job keeps with explain.target=predicted: the predicted
        class's, or for a multi-label run each label's over its threshold and the top label's."""
        images = to_model_input(pixels, self.model_input)
        thresholds = None if self.thresholds is None else np.asarray(self.thresholds, np.float32)
        maps: list[dict[int, dict[str, np.ndarray]]] = [{} for _ in images]
        if method is None:
            probabilities = self.explainers[self.methods[0]].probabilities(images)
        else:
            unlabelled = np.full(len(images), -1)
            explained = self.explainers[method](images, self.task.cam_slots(EXPLAINED, unlabelled))
            probabilities, targets = explained.probabilities, explained.targets
            keep = self.task.keep_maps(EXPLAINED, unlabelled, targets, probabilities, thresholds)
            for index, slot in zip(*np.nonzero(keep)):
                maps[index][int(targets[index, slot])] = {layer: explained.maps[(method, layer)][index, slot]
                                                          for layer in self.cam_layers}
        predicted = self.task.predictions(probabilities, thresholds)
        calibrated = (None if self.calibration is None else self.task.apply_temperature(
            probabilities.astype(np.float64), np.asarray(self.calibration["temperatures"])))
        return [Prediction(probabilities[index], predicted[index], maps[index],
                           None if calibrated is None else calibrated[index]) for index in range(len(images))]

    def info(self) -> dict:
        return {"run_id": self.run_id, "model_version": self.version, "task": self.task.kind,
                "classes": list(self.task.class_names), "input_size": self.image_size, "color": self.color,
                "preprocessing": self.preprocess, "methods": list(self.methods), "cam_layers": list(self.cam_layers),
                "cam_target": self.explainers[self.methods[0]].target.name,
                "thresholds": self.thresholds, "max_image_pixels": self.max_pixels,
                "calibration": None if self.calibration is None else {
                    key: self.calibration[key] for key in ("method", "paper", "fitted_on", "shared_by", "temperatures")}}


def _load_run(location: str, settings: ServeSettings) -> Loaded:
    from medray.config import load_config
    from medray.models.classifier import load_model_file
    from medray.models.registry import get_backbone
    from medray.run_folder import open_run_folder, read_calibration, read_thresholds

    run_dir = open_run_folder(location).local  # a bucket's run is read into a scratch copy
    config = load_config(run_dir / "config.yaml")
    data = json.loads((run_dir / "data.json").read_text())
    task = make_task(config.task, data["class_names"], bool(data.get("multi_label")))
    backbone = get_backbone(config.model.backbone)
    model_bytes = (run_dir / "model.keras").read_bytes()
    return Loaded(load_model_file(run_dir / "model.keras"), model_bytes, task,
                  config.model.input_size or backbone.input_size, data.get("color", "gray"), backbone.model_input,
                  settings.cam_layer or backbone.cam_layers, task.cam_target(), read_thresholds(run_dir),
                  settings.max_image_pixels or config.data.max_image_pixels, backbone.name, read_calibration(run_dir))


def _load_model_file(location: str, settings: ServeSettings) -> Loaded:
    """With `medray explain --model`'s rules: Lambda layers refused unless trusted, safe_mode, shape
    and class names checked; the head (softmax or sigmoid) decides what maps differentiate."""
    from medray.config import DataConfig
    from medray.explain.model_job import preprocessing
    from medray.models.user_model import check_class_names, load_user_model, load_user_model_bytes, model_shape

    model_bytes = storage.read_bytes(location)
    model = (load_user_model_bytes(model_bytes, Path(storage.name(location)).suffix.lower(), settings.trust_model_code)
             if storage.is_uri(location) else load_user_model(location, settings.trust_model_code))
    shape = model_shape(model, location)
    check_class_names(settings.class_names, shape, location)
    task: Task = SingleLabelTask(tuple(settings.class_names))
    return Loaded(model, model_bytes, task, shape.input_size, "rgb" if shape.channels == 3 else "gray",
                  ModelInput(shape.channels, preprocessing(settings.preprocess)), settings.cam_layer, None, None,
                  settings.max_image_pixels or DataConfig.model_fields["max_image_pixels"].default,
                  settings.preprocess)
