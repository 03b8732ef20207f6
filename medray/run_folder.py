"""A run's folder at `output.dir`: local, or in object storage with a local scratch copy.

With a URI output.dir (s3://bucket/results) the driver writes the small files (config, manifest,
metrics, plots, maps, report) into a scratch folder and uploads it with `pyarrow.fs.copy_files`
when the run ends; Ray Train writes checkpoints straight to `<run>/checkpoints` in the bucket, so
a worker on any node, and a resumed run, finds them. `_SUCCESS` is written last, in both cases:
a run folder without it did not finish (it may still be running, or it failed).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.fs as pafs
import yaml

from medray import storage
from medray.errors import MedrayError

SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class RunFolder:
    # where the driver writes; the run folder itself when output.dir is local
    local: Path
    # the run folder's location: a local path or a URI
    location: str

    @property
    def remote(self) -> bool:
        return storage.is_uri(self.location)

    @property
    def checkpoints(self) -> str:
        """Ray Train's storage_path: always in the run folder itself, never in the scratch copy."""
        return storage.join(self.location, "checkpoints")


def create_run_folder(config, resumable: bool = True) -> RunFolder:
    """`<output.dir>/<run_id>`: a new name (suffixed -2, -3, ...) unless output.run_id was given; a
    named folder that exists is resumed only when unfinished and saved with the same config
    (`check_reuse`), else MedrayError; `resumable` False for a job `medray resume` cannot continue."""
    run_id = config.output.run_id or f"{config.name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    output_dir = storage.normalise(config.output.dir)
    storage.check_bucket(output_dir, "output.dir")
    location = storage.join(output_dir, run_id)
    suffix = 1
    while exists(location) and config.output.run_id is None:
        suffix += 1
        location = storage.join(output_dir, f"{run_id}-{suffix}")
    if config.output.run_id is not None:
        check_reuse(location, config, resumable)
    folder = scratch_folder(location)
    return RunFolder(folder.local.resolve(), location)


# How many of a changed config's keys the refusal names.
CHANGES_SHOWN = 3


def check_reuse(location: str, config, resumable: bool = True) -> None:
    """A named run folder that exists may only be resumed, and only with its own config: a finished
    run, or one saved with another config, is refused rather than overwritten or re-labelled (its
    checkpoints, history and model come from the config it was started with)."""
    if not exists(location):
        return
    if finished(location):
        raise MedrayError(f"{location} holds a finished run (output.run_id={config.output.run_id}); its results stay "
                          "as they are: choose a new output.run_id, or leave it unset for a fresh name")
    saved_path = storage.join(location, "config.yaml")
    if not exists(saved_path):  # started but killed before its config was written: nothing to contradict
        return
    saved = _flatten(yaml.safe_load(storage.read_bytes(saved_path)) or {})
    wanted = _flatten(config.model_dump(mode="json"))
    changed = [key for key in sorted(saved.keys() | wanted.keys()) if saved.get(key) != wanted.get(key)]
    if changed:
        shown = ", ".join(f"{key} {saved.get(key)!r} -> {wanted.get(key)!r}" for key in changed[:CHANGES_SHOWN])
        more = f" and {len(changed) - CHANGES_SHOWN} more" if len(changed) > CHANGES_SHOWN else ""
        how = (f"continue it as it was with `medray resume {location}`, or choose a new output.run_id" if resumable
               else f"choose a new output.run_id, or delete {location} to start it again")
        raise MedrayError(f"{location} holds an unfinished run started with another config ({shown}{more}); {how}")


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def open_run_folder(location: str) -> RunFolder:
    """An existing run folder (for `medray explain --run`): a remote one is downloaded to scratch,
    without its checkpoints (explain needs model.keras and the small files)."""
    location = storage.normalise(location)
    if storage.info(location, "--run").type != pafs.FileType.Directory:
        raise storage.missing(location, "--run", "pass the folder of a finished `medray run`")
    folder = scratch_folder(location)
    download(folder, skip=("checkpoints", "explain"))
    return folder


def scratch_folder(location: str) -> RunFolder:
    """A folder at `location` (a run, sweep or trial): itself when local, else an empty scratch copy."""
    location = storage.normalise(location)
    local = Path(tempfile.mkdtemp(prefix="medray-")) / storage.name(location) if storage.is_uri(location) \
        else Path(location)
    local.mkdir(parents=True, exist_ok=True)
    return RunFolder(local, location)


def download(folder: RunFolder, skip: tuple[str, ...] = ("checkpoints",)) -> None:
    """Bring the remote folder's files into the scratch copy, except the subfolders in `skip`
    (checkpoints stay in the bucket; the driver reads the one it needs)."""
    if not folder.remote:
        return
    for location, _ in storage.list_files(folder.location, "output.dir"):
        relative = storage.relative(location, folder.location)
        if relative.split("/")[0] in skip:
            continue
        target = folder.local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(location))


def exists(location: str) -> bool:
    return storage.info(location, "output.dir").type != pafs.FileType.NotFound


def publish(folder: RunFolder, subfolder: str = "") -> None:
    """Upload the scratch copy (or only `subfolder` of it) to the run folder; a no-op when local."""
    if not folder.remote:
        return
    filesystem, path = storage.resolve(folder.location)
    source = folder.local / subfolder if subfolder else folder.local
    target = f"{path}/{subfolder}" if subfolder else path
    pafs.copy_files(str(source), target, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=filesystem)


def mark_finished(folder: RunFolder) -> None:
    """Upload what is left to upload, then `_SUCCESS`: the last file of a finished run."""
    publish(folder)
    storage.write_bytes(storage.join(folder.location, SUCCESS),
                        f"finished {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n".encode())


def finished(location: str) -> bool:
    return storage.info(storage.join(location, SUCCESS), "run folder").type == pafs.FileType.File


# The decision thresholds of a multi-label run, chosen on the validation split (medray.task).
THRESHOLDS = "thresholds.json"


def read_calibration(run_dir: Path) -> dict | None:
    """The run's calibration.json (temperature scaling fitted on val, medray.calibration), or None
    for a run without one (no validation split, or from before calibration existed)."""
    from medray.calibration import CALIBRATION

    path = Path(run_dir) / CALIBRATION
    return json.loads(path.read_text()) if path.is_file() else None


def read_thresholds(run_dir: Path) -> list[float] | None:
    """The run's per-label thresholds, or None where the run has none (single-label, binary)."""
    path = Path(run_dir) / THRESHOLDS
    return json.loads(path.read_text())["thresholds"] if path.is_file() else None
