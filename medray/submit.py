"""`medray submit`: `ray job submit --working-dir .` after checking what the upload will hold.

Ray zips the working directory (without compression) and uploads it in one request, which the
job server refuses above 100 MiB with a bare HTTP 413 that names no file. A dataset left in the
project folder (a Kaggle download) is the usual cause. This walks the folder with Ray's own
selection (`.gitignore`, `.rayignore` and `excludes`, as `ray job submit` applies them), prints the
package size, and stops before any upload when it is too large, naming the largest paths.
The project's `.rayignore` already keeps everything but medray/, jobs/, configs/ and
pyproject.toml out; data belongs in object storage (data.path: s3://...), not in the package.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from medray.errors import MedrayError

# The job server's request limit (dashboard `Maximum request body size 104857600`).
UPLOAD_LIMIT_BYTES = 100 * 1024**2
LARGEST_SHOWN = 5


def package_sizes(working_dir: Path, excludes: list[str] = ()) -> Counter:
    """Bytes per top-level entry of `working_dir` that `ray job submit --working-dir` would upload."""
    # Ray's own traversal, so that the count matches the package exactly (ray is pinned to 2.60).
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = working_dir.absolute()
    sizes: Counter = Counter()

    def count(path: Path) -> None:
        if path.is_file():
            top = path.relative_to(root).parts[0]
            sizes[top + ("/" if (root / top).is_dir() else "")] += path.stat().st_size

    _dir_travel(root, [_get_excludes(root, list(excludes))], count, include_gitignore=True)
    return sizes


def check_package(working_dir: Path, excludes: list[str] = (), limit: int = UPLOAD_LIMIT_BYTES) -> int:
    """Print the package size; MedrayError naming the largest paths if it exceeds `limit` bytes."""
    sizes = package_sizes(working_dir, excludes)
    total = sum(sizes.values())
    print(f"medray submit: job package {working_dir} is {mib(total)} (Ray's upload limit {mib(limit)})",
          flush=True)
    if total > limit:
        largest = ", ".join(f"{name} ({mib(size)})" for name, size in sizes.most_common(LARGEST_SHOWN))
        raise MedrayError(
            f"job package {working_dir} is {mib(total)}, over Ray's {mib(limit)} upload limit; largest: {largest}; "
            "move data to object storage (data.path: s3://...) or list those paths in .rayignore")
    return total


def mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def submit_job(address: str | None, command: list[str], working_dir: Path = Path("."),
               runtime_env_json: str | None = None) -> int:
    """Check the package, then hand over to `ray job submit`; its exit code."""
    if not command:
        raise MedrayError("medray submit needs the job's command after --, e.g. "
                          "medray submit -- python jobs/run.py --config configs/demo.yaml")
    check_package(working_dir)
    ray = str(Path(sys.executable).with_name("ray"))
    args = [ray, "job", "submit", "--working-dir", str(working_dir)]
    args += ["--address", address] if address else []
    args += ["--runtime-env-json", runtime_env_json] if runtime_env_json else []
    return subprocess.run([*args, "--", *command]).returncode
