"""The run config: one YAML schema, validated before Ray starts, overridable key by key.

Every stage reads its settings from a `RunConfig`; nothing else is passed around. Validation
errors name the dotted key, the bad value and what is allowed, in one line each.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from medray.data.sources import describe_kinds, source_kind_names
from medray.errors import MedrayError
from medray.storage import is_uri


# A local path or a URI (s3://bucket/prefix, gs://...), kept as text: pathlib would turn
# s3://bucket into s3:/bucket. Path objects from Python callers are accepted.
Location = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, PurePath) else value)]


def _known_source_kind(name: Any) -> str:
    # Checked against the registry, not a Literal: a new source kind registers itself.
    if not isinstance(name, str) or name not in source_kind_names():
        raise PydanticCustomError("source_kind", "Input should be " + describe_kinds(quote="'"))
    return name


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    """Random transforms applied to the training split only, drawn anew for every row and epoch.

    Each range is multiplied by `strength` (0 turns augmentation off), so a Tune search space can
    sample one number. Rotation, shift and zoom are one affine map with one bilinear resampling.
    """

    flip: bool = True  # left-right, with probability 1/2
    rotation_degrees: float = Field(10.0, ge=0, le=180)  # uniform in +-rotation_degrees
    shift_fraction: float = Field(0.0, ge=0, le=0.5)  # per axis, uniform in +-fraction of the side
    zoom_fraction: float = Field(0.0, ge=0, lt=1)  # scale uniform in [1 - z, 1 + z]
    brightness: float = Field(0.0, ge=0, le=1)  # offset uniform in +-brightness * 255
    contrast: float = Field(0.0, ge=0, lt=1)  # deviation from the image's mean scaled by [1 - c, 1 + c]
    strength: float = Field(1.0, ge=0, le=4)
    # What fills the corners that rotations, shifts and zoom-outs uncover. Black corners that only
    # training images have are a shortcut a model learns (validation accuracy fell from 0.9 to 0.7
    # on PneumoniaMNIST); "reflect" mirrors the image into them, as Keras's random layers do.
    fill: Literal["reflect", "nearest", "constant"] = "reflect"


class SplitConfig(_Section):
    """The split medray makes when a dataset has none: stratified by class for folders of
    root/<class>/*; by patient (data.patient_column), else image by image, for a CSV listing."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    # Its own seed: changing the augmentation seed must not move images between splits.
    seed: int = Field(0, ge=0, lt=2**32)
    # A share of each class's train rows (seeded by `seed`) used as the validation split instead of
    # the dataset's own, for datasets whose validation split is too small to pick a model by.
    val_from_train: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"data.split: train {self.train} + val {self.val} + test {self.test} must add up to 1")
        return self


class DataConfig(_Section):
    source: Annotated[str, BeforeValidator(_known_source_kind)] = "parquet"
    # A folder, a file, a glob (`data/*.parquet`) or a list of them: local paths or URIs
    # (s3://bucket/prefix, gs://...), read by every worker through pyarrow.fs (see medray/storage.py).
    path: Location | list[Location]
    image_column: str = "image"
    # A parquet column of image file paths (relative to the parquet file's folder), instead of image_column.
    path_column: str | None = None
    # Integer class indices or class-name strings.
    label_column: str = "label"
    # Optional lesion masks (image struct or binary), read for the test split to score CAMs.
    mask_column: str | None = "mask"
    # Multi-label data: one lesion mask column per label ({label name: column}), for per-label
    # localisation checks; replaces mask_column.
    mask_columns: dict[str, str] | None = None
    # Multi-label entries marked uncertain (-1, CheXpert): "ignore" masks them out of the loss and
    # the metrics, "ones" / "zeros" count them as present / absent (Irvin et al. 2019, U-Ignore,
    # U-Ones, U-Zeros).
    uncertain: Literal["ignore", "ones", "zeros"] = "ignore"
    # Overrides the class names found in the data (Hugging Face metadata or folder names).
    class_names: list[str] | None = None
    # data.source csv: a CSV file listing one image per row (ChestX-ray14's Data_Entry_2017.csv,
    # CheXpert's train.csv), its paths in image_column relative to image_folder: a folder, absolute
    # or relative to the CSV's folder; None: the CSV's own folder.
    image_folder: Location | None = None
    # csv: the label column lists an image's labels joined by this ("Effusion|Mass", ChestX-ray14);
    # None: one class per row (single-label).
    label_separator: str | None = Field("|", min_length=1)
    # csv: the label column's value for an image without findings (no label present).
    no_finding: str = "No Finding"
    # csv, CheXpert style, instead of label_column: one column per label, each holding 1 (present),
    # 0 (absent), -1 (uncertain, see `uncertain`) or blank. Blank (not mentioned in the report) counts
    # as 0, as in the CheXpert paper's training.
    label_columns: list[str] | None = Field(None, min_length=1)
    # csv: a column naming each row's split (train, val, test or validation, ...). Without it medray
    # splits by data.split: by patient when patient_column is set, else image by image.
    split_column: str | None = None
    # csv: a column naming each image's patient (ChestX-ray14: "Patient ID"): all images of a patient
    # go to one split, so that no test patient was seen in training.
    patient_column: str | None = None
    max_image_pixels: int = Field(50_000_000, gt=0)
    # Volumes (CT): the window mapped to 0-255, [level, width] in the stored units (Hounsfield after
    # DICOM's rescale), or a standard CT window by name; None: each volume's own range.
    window: tuple[float, Annotated[float, Field(gt=0)]] | Literal[
        "brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"] | None = None
    # gray: every image as gray; rgb: colour kept (gray images repeated over 3 channels); auto: rgb
    # when at least half of a sample of train images carry colour (medray/data/sources/color.py).
    color: Literal["auto", "gray", "rgb"] = "auto"
    # A class with fewer validation images than this gets a warning: its validation metrics are noise.
    min_val_per_class: int = Field(10, ge=0)
    # error: stop at the first unusable row, naming it; skip: leave such rows out, counted in data.json.
    on_bad_image: Literal["error", "skip"] = "error"
    split: SplitConfig = SplitConfig()
    # A manifest written by `medray data inspect --dedupe`, used instead of building one.
    manifest: Location | None = None
    augment: AugmentConfig = AugmentConfig()
    # Keep the decoded train and validation rows in Ray's object store after the first epoch, so
    # later epochs only augment. "auto": when they take at most a tenth of the object store.
    cache: Literal["auto", "always", "never"] = "auto"
    # How the training rows are reordered every epoch, so that the order a source lists its rows in
    # (class folders, label-sorted parquet) never reaches training. "full": Ray Data's random_shuffle
    # of the whole split; "blocks": small blocks in random order, then a shuffle buffer of
    # shuffle_buffer_rows rows in every training worker (less data moved, less mixing).
    shuffle: Literal["full", "blocks"] = "full"
    shuffle_buffer_rows: int = Field(1024, ge=1, le=1_000_000)
    # For `medray explain --model` only. False: the images carry no labels (a folder of images or
    # DICOM files without class subfolders, a parquet without data.label_column): every row is
    # explained and filed under its predicted class. None: no labels when the parquet has no label
    # column or the folder holds its images directly.
    labelled: bool | None = None


class ModelConfig(_Section):
    backbone: str = "baseline_cnn"
    # "none" (random init), "imagenet" (Keras's cache, ~/.keras/models) or a path to a weights file
    weights: str = "none"
    # Phase one: "all" (pretrained base frozen), "none" (everything trains) or N (top N base layers train)
    freeze: Literal["all", "none"] | Annotated[int, Field(ge=0)] = "all"
    head_units: int = Field(128, ge=1, le=65_536)
    # Side of the square model input, or a volume model's [D, H, W] (cnn3d, resnet18_3d); None means
    # the backbone's own default.
    input_size: Annotated[int, Field(ge=16, le=1024)] | Annotated[
        list[Annotated[int, Field(ge=8, le=512)]], Field(min_length=3, max_length=3)] | None = None
    # Global max pooling finds a small lesion anywhere; average pooling dilutes it. "flatten" keeps
    # where a feature was (baseline_cnn on small inputs only: the head grows with the grid).
    pooling: Literal["max", "avg", "flatten"] = "max"
    dropout: float = Field(0.3, ge=0, lt=1)
    # baseline_cnn only: one conv block (conv 3x3 -> [batch norm] -> relu -> max pool) per entry.
    conv_filters: list[Annotated[int, Field(ge=1, le=4096)]] = Field([32, 64, 128], min_length=1, max_length=8)
    batch_norm: bool = True


class FineTuneConfig(_Section):
    """Phase two of transfer learning: after train.epochs, unfreeze the top layers at a lower rate."""

    epochs: int = Field(0, ge=0, le=10_000)
    layers: int = Field(20, ge=1)
    lr: float = Field(1e-5, gt=0, le=10)


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=10_000)
    # Global batch size: each of N workers gets batch_size / N rows per step.
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    # "weights": class c's loss weighted by n / (k * n_c) from the train counts (multi-label: label k's
    # positives weighted by its negatives / positives); "oversample" (single-label and binary only):
    # train rows repeated (or, above the target, subsampled) to exactly oversample_to rows per class and epoch.
    class_balance: Literal["none", "weights", "oversample"] = "weights"
    # rows per class and epoch when oversampling; "max" = the largest class's count
    oversample_to: Annotated[int, Field(ge=1)] | Literal["max"] = "max"
    # The validation metric that picks the exported model; loss has no ties, unlike a saturated AUC.
    monitor: Literal["val_loss", "val_auc", "val_accuracy"] = "val_loss"
    # Stop after this many epochs without improvement of `monitor`; 0 never stops early.
    early_stopping_patience: int = Field(5, ge=0)
    # Multiply the learning rate by lr_plateau_factor after this many epochs without improvement.
    lr_plateau_patience: int = Field(2, ge=0)
    lr_plateau_factor: float = Field(0.5, gt=0, lt=1)
    # Targets of 1 - s + s / k for the true class and s / k for the others instead of one-hot: a model
    # that cannot drive its outputs to 0 and 1 stays less sure of what it learned from the train
    # split's look. On PneumoniaMNIST, whose test X-rays look unlike train and validation, 0.1 raised
    # test AUC (README, "Sweeps"). The loss reported as loss and val_loss is the smoothed one.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # What each batch minimises (medray/train/losses.py), for any task: "cross_entropy"; "focal" (Lin
    # et al. 2017), cross-entropy scaled by (1 - p_t)^focal_gamma so that confident right answers add
    # little, a sigmoid head's positives weighted by focal_alpha and negatives by 1 - focal_alpha
    # (None: no such weights; softmax heads balance classes with class_balance instead); "ohem",
    # online hard example mining (Shrivastava et al. 2016): cross-entropy averaged over the
    # ohem_fraction of each batch's images with the highest loss.
    loss: Literal["cross_entropy", "focal", "ohem"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0, le=10)
    focal_alpha: float | None = Field(None, gt=0, lt=1)
    ohem_fraction: float = Field(0.5, gt=0, le=1)
    # Which epoch's model is exported (and, in a sweep, ranked and tested): the best by `monitor`, or
    # the last. "last" suits a schedule that ends at a small learning rate when the validation split
    # is saturated: picking its best epoch then picks noise, often an early, overconfident epoch.
    export_epoch: Literal["best", "last"] = "best"
    fine_tune: FineTuneConfig = FineTuneConfig()
    # Worker-group restarts (from the latest checkpoint) before the run fails.
    max_failures: int = Field(2, ge=0, le=100)

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "min" if self.monitor == "val_loss" else "max"


class ScalingConfig(_Section):
    num_workers: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(0.5, gt=0)
    use_gpu: bool = False
    # CPUs kept free of training workers so that Ray Data can decode and augment: without them
    # the training workers wait for data that no task can run to produce, forever.
    cpus_for_data: float = Field(1.0, ge=0)
    # How Ray places the training workers: PACK fills one node first (fast collectives); SPREAD puts
    # them on different nodes where it can (a lost node then costs fewer workers).
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"


CamMethodName = Literal["gradcam", "gradcam++", "hirescam", "scorecam", "integrated_gradients"]


class ExplainConfig(_Section):
    enabled: bool = True
    # One CAM method or a list of them; all are computed from the same batch.
    method: CamMethodName | list[CamMethodName] = "gradcam"
    # "all": one map per class for every image.
    target: Literal["predicted", "true", "all"] = "predicted"
    batch_size: int = Field(64, ge=1, le=65_536)
    concurrency: int = Field(1, ge=1, le=1024)
    gpus_per_actor: float = Field(0.0, ge=0)
    overlays: bool = True
    colorbar: bool = False
    # Localisation against the lesion masks on every image; ROAD (Rong et al. 2022) and the sanity checks
    # (Adebayo et al. 2018) on a sample of `check_sample` test images, stratified by true class and by
    # correct/incorrect prediction and drawn with `sample_seed`.
    checks: bool = True
    check_sample: int = Field(256, ge=0, le=100_000)
    # The pointing game counts a map's maximum within this many pixels of the lesion mask as a hit
    # (Zhang et al. 2016 use 15 px on ~500 px images); 0 is the strict game. In pixels of the model input.
    pointing_tolerance_px: float = Field(0.0, ge=0, le=1000)
    sample_seed: int = Field(0, ge=0, lt=2**32)
    # Unused since ROAD replaced the blurred deletion/insertion curves; accepted so that older run
    # folders' config.yaml still load (`medray resume`).
    deletion_steps: int = Field(16, ge=2, le=256)
    # Points of the cascading model randomisation, top block first (neighbouring blocks are merged
    # beyond this many; 1: the whole model re-initialised at once).
    cascade_steps: int = Field(8, ge=1, le=64)
    # Epochs the same architecture trains on the sample with permuted labels, the data randomisation
    # test; 0 leaves that test out.
    label_randomisation_epochs: int = Field(10, ge=0, le=1000)
    gallery_size: int = Field(16, ge=0, le=256)
    # A Keras classifier trained elsewhere (.keras or .h5), explained instead of a run's model.
    model: Path | None = None
    # What that model expects of [0, 255] pixels: none, unit (1/255), symmetric ([-1, 1]), imagenet
    # (1/255 then ImageNet mean/std), or a registry backbone's own preprocess_input (e.g. mobilenet_v2).
    preprocess: Literal["none", "unit", "symmetric", "imagenet", "mobilenet_v2", "densenet169", "inception_v3",
                        "xception", "resnet50", "efficientnet_b0"] = "unit"
    # Layer path(s) to read maps from (`outer/inner` inside a nested backbone); None: found from the graph.
    cam_layer: str | list[str] | None = None
    # Lambda layers run Python code stored in the model file; refused unless this is true.
    trust_model_code: bool = False

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(dict.fromkeys(self.method))


class ReportConfig(_Section):
    """report.html at the end of a run (rebuild it any time with `medray report <run folder>`)."""

    enabled: bool = True
    # Misclassified test images shown per true class, most confident mistakes first.
    examples_per_class: int = Field(16, ge=0, le=1000)


class TrackingConfig(_Section):
    """MLflow logging of params, per-epoch metrics and artifacts; off unless `enabled: true`."""

    enabled: bool = False
    # None: a local file store at <output.dir>/mlruns; or any MLflow URI (http://..., file:///...).
    uri: str | None = None
    experiment: str = Field("medray", min_length=1, max_length=200)


class OutputConfig(_Section):
    # A local folder or a URI (s3://bucket/results): run folders, checkpoints and sweeps go there.
    dir: Location = "results"
    # None means "<name>-<UTC timestamp>".
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunConfig(_Section):
    name: str = Field("medray", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int = Field(0, ge=0, lt=2**32)
    # The problem's shape (medray/task.py): single_label (K softmax units), binary (two classes, one
    # sigmoid unit), multi_label (K sigmoid units, any subset of labels per image); auto: multi_label
    # when the data lists several labels per image, single_label otherwise.
    task: Literal["auto", "single_label", "binary", "multi_label"] = "auto"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    explain: ExplainConfig = ExplainConfig()
    output: OutputConfig = OutputConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.train.batch_size < self.scaling.num_workers:
            raise ValueError(
                f"train.batch_size={self.train.batch_size} is smaller than "
                f"scaling.num_workers={self.scaling.num_workers}; the global batch is split "
                "across workers, so it needs at least one row per worker"
            )
        if self.train.fine_tune.epochs and self.model.backbone == "baseline_cnn":
            raise ValueError("train.fine_tune.epochs needs a pretrained backbone; baseline_cnn trains "
                             "from scratch in one phase, so set train.fine_tune.epochs=0")
        if self.model.weights not in ("none", "imagenet") and not Path(self.model.weights).is_file():
            raise ValueError(f"model.weights={self.model.weights!r} is neither none, imagenet nor an "
                             "existing weights file")
        if self.model.pooling == "flatten" and self.model.backbone != "baseline_cnn":
            raise ValueError(f"model.pooling=flatten: only baseline_cnn flattens its features; "
                             f"{self.model.backbone} needs max or avg")
        if self.tracking.enabled and self.tracking.uri is None and is_uri(self.output.dir):
            raise ValueError(f"tracking.uri: MLflow's default file store (<output.dir>/mlruns) cannot live in "
                             f"object storage (output.dir={self.output.dir}); set tracking.uri to an MLflow "
                             "server (http://...), whose artifact store may be that bucket")
        _check_data_keys(self.data)
        if self.model.weights != "none" and self.model.backbone == "baseline_cnn":
            raise ValueError("model.weights: baseline_cnn has no pretrained weights; use weights: none")
        return self


# Keys that only a CSV listing reads; set for another data.source they would be silently ignored.
CSV_KEYS = ("image_folder", "label_separator", "no_finding", "label_columns", "split_column", "patient_column")


def _check_data_keys(data: DataConfig) -> None:
    set_keys = data.model_fields_set
    if data.source != "csv":
        stray = [key for key in CSV_KEYS
                 if key in set_keys and getattr(data, key) != DataConfig.model_fields[key].default]
        if stray:
            raise ValueError(f"data.{stray[0]} applies to data.source csv only (data.source is {data.source}); "
                             "remove it")
    if data.label_columns is not None:
        if "label_column" in set_keys:
            raise ValueError("data.label_column and data.label_columns: give one, the column of label names "
                             "(ChestX-ray14) or one column per label (CheXpert)")
        repeated = next((name for name in data.label_columns if data.label_columns.count(name) > 1), None)
        if repeated is not None:
            raise ValueError(f"data.label_columns lists {repeated!r} twice; list each label once")


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config, apply `key.sub=value` overrides, validate; raise MedrayError if bad."""
    path = Path(path)
    raw = read_yaml_mapping(path, "config file", "pass --config with a YAML file")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def read_yaml_mapping(path: Path, what: str, hint: str) -> dict:
    """A YAML file holding a mapping; `what` names it and `hint` says what to do if it is missing."""
    if not path.is_file():
        raise MedrayError(f"{what} {path} does not exist; {hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise MedrayError(f"{what} {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise MedrayError(f"{what} {path} must hold a mapping of keys, not {type(raw).__name__}")
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        lines = _merge_union_errors([describe_error(item) for item in error.errors()])
        raise MedrayError(f"{source}: " + "; ".join(lines)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set one dotted key, e.g. `train.lr=3e-4`; the value is parsed as YAML (numbers, lists)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise MedrayError(f"--set {override!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MedrayError(f"--set {override!r}: {part} is a value, not a section")
        node = child
    node[leaf] = yaml.safe_load(text) if text.strip() else None


# Pydantic names the alternatives of a union in the location ("literal['all','none']", "int").
_UNION_TAG = re.compile(r"[\[\]'-]|^(int|float|str|bool)$")


def describe_error(item: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in item["loc"] if not _UNION_TAG.search(str(part)))
    if item["type"] == "extra_forbidden":
        return f"unknown key {key}{_suggestion(item['loc'])}"
    if item["type"] == "missing":
        return f"missing key {key}"
    if not key:  # a cross-field check: its message names the keys itself
        return item["msg"].removeprefix("Value error, ")
    return f"{key}={item.get('input')!r} is not allowed: {item['msg']}"


def _merge_union_errors(lines: list[str]) -> list[str]:
    """One line per key: a value that fits no alternative of a union lists every alternative's rule."""
    merged: dict[str, str] = {}
    for line in lines:
        head, sep, rule = line.partition(" is not allowed: ")
        merged[head] = f"{merged[head]} or {rule}" if sep and head in merged else line
    return list(merged.values())


def _suggestion(loc: tuple) -> str:
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return ""
        model = field.annotation
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f" ({hint}allowed: {', '.join(known)})"


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
