"""One preparation of a job's data and model, shared by `medray run`, both `medray explain`s, a
sweep's trials and the benchmarks: the backbone and the input size, the discovered source, the
Ray connection, the run's manifest and the Ray Datasets of its splits.

It comes in two steps so that everything checkable without Ray is checked before Ray starts:
`prepare_job` runs on the driver alone (a bad backbone, path or layout costs a second), and
`Job.start` connects to Ray and keeps the rows the manifest finds usable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import ray

from medray.cluster import connect
from medray.config import RunConfig
from medray.data.manifest import prepare_source, usable_unlabelled
from medray.data.pipeline import TrainingData, read_split, training_data
from medray.data.sources import Source, discover, discover_unlabelled
from medray.data.volumes import spatial_shape
from medray.errors import MedrayError
from medray.models.registry import Backbone, get_backbone
from medray.task import SingleLabelTask, Task, make_task


@dataclass(frozen=True)
class Job:
    config: RunConfig
    # the backbone medray builds, or None for a model trained elsewhere (`medray explain --model`)
    backbone: Backbone | None
    # side of the square model input in pixels, or a volume model's (D, H, W): model.input_size, the
    # model file's or the backbone's
    image_size: int | tuple[int, ...]
    # as discovered; after `start`, only the manifest's usable rows
    source: Source
    # the problem's shape (medray.task): head, labels, loss, metrics, CAM target
    task: Task
    # False: images without labels, every row in the test split (`medray explain --model`)
    labelled: bool = True
    # after `start`: the run's data report (data.json) of labelled rows
    data_report: dict | None = None
    # after `start`: rows without labels left out as unreadable (data.on_bad_image: skip)
    skipped: int = 0

    def connect(self) -> Job:
        """Connect to (or start) the Ray cluster of config.scaling; raises MedrayError if it cannot."""
        connect(self.config.scaling)
        return self

    def start(self, run_dir: Path) -> Job:
        """Connect to Ray, then let the run's manifest (`run_dir`/manifest.parquet, built once, reused
        on resume) decide the rows every stage sees: unusable rows stop the job in one line or, with
        data.on_bad_image: skip, are left out and counted."""
        self.connect()
        if not self.labelled:
            source, skipped = usable_unlabelled(self.source, self.config.data, run_dir / "manifest.parquet")
            return replace(self, source=source, skipped=skipped)
        source, data_report = prepare_source(self.source, self.config.data, run_dir)
        return replace(self, source=source, data_report=data_report)

    def read_split(self, split: str, row_ids: frozenset[str] | None = None,
                   originals: bool = False) -> ray.data.Dataset:
        """Decoded rows of one split at `image_size` (see medray.data.pipeline.read_split); with
        `row_ids`, only those rows; with `originals`, each image at its own size as well."""
        return read_split(self.source, split, self.image_size, self.config.data, row_ids, originals)

    def training_data(self) -> TrainingData:
        """The train and validation Ray Datasets, augmented and preprocessed for `backbone`."""
        return training_data(self.source, self.backbone, self.image_size, self.config)


def prepare_job(config: RunConfig, *, source: Source | None = None, input_size: int | None = None,
                unlabelled_classes: list[str] | None = None) -> Job:
    """The job of `config`, checked on the driver without Ray: model.backbone resolved (unless
    `input_size` says the model comes from a file of that input size), and data.path discovered -
    or `source` used as it is (a sweep discovers once for all its trials), or with
    `unlabelled_classes`, every image of data.path read as unlabelled test rows.

    Raises MedrayError naming the key or the file that is wrong.
    """
    backbone = get_backbone(config.model.backbone) if input_size is None else None
    image_size = input_size or config.model.input_size or backbone.input_size
    image_size = image_size if isinstance(image_size, int) else tuple(image_size)
    if backbone is not None:
        check_spatial_dims(config, backbone, image_size)
    if source is None:
        source = (discover(config.data) if unlabelled_classes is None
                  else discover_unlabelled(config.data, unlabelled_classes))
    if backbone is not None:
        check_source_dims(config, backbone, source)
    # A model trained elsewhere classifies one class per image; what its maps differentiate is
    # read from its head (medray.explain.targets.target_for_head).
    task = (make_task(config.task, source.class_names, source.multi_label) if input_size is None
            else SingleLabelTask(tuple(source.class_names)))
    task.check_config(config)
    return Job(config, backbone, image_size, source, task, labelled=unlabelled_classes is None)


SPACES = {2: "2-D images", 3: "3-D volumes"}


def check_spatial_dims(config: RunConfig, backbone: Backbone, image_size: int | tuple[int, ...]) -> None:
    """model.input_size has as many axes as the backbone's input: a side for images, [D, H, W] for volumes."""
    dims = backbone.model_input.spatial_dims
    if len(spatial_shape(image_size)) != dims:
        wanted = "one side, e.g. 64" if dims == 2 else "[D, H, W], e.g. [32, 32, 32]"
        shown = image_size if isinstance(image_size, int) else list(image_size)
        raise MedrayError(f"model.input_size={shown}: "
                          f"model.backbone {backbone.name} reads {SPACES[dims]}; give {wanted}")


def check_source_dims(config: RunConfig, backbone: Backbone, source: Source) -> None:
    """The data's spatial axes are the model's: volumes need a 3-D backbone, images a 2-D one."""
    data_dims, model_dims = source.spatial_dims, backbone.model_input.spatial_dims
    if data_dims != model_dims:
        fitting = "cnn3d or resnet18_3d" if data_dims == 3 else "baseline_cnn or a keras.applications backbone"
        raise MedrayError(f"data.source {source.kind} holds {SPACES[data_dims]} but model.backbone "
                          f"{backbone.name} reads {SPACES[model_dims]}; choose {fitting}")
