"""What the serving tests share: a Serve config derived from configs/serve.yaml, requests with the
bearer token, and a split's image bytes by the batch job's row ids."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import requests
import yaml

from conftest import ROOT

TIMEOUT = 120


def serve_config(path: Path, num_cpus: float = 0.25, deployment: dict | None = None, **application) -> Path:
    """configs/serve.yaml written to `path` with a share of a CPU per replica, its application's keys
    (name, route_prefix, ...) and deployment options replaced by these."""
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    config["applications"][0].update(application)
    options = config["applications"][0]["deployments"][0]
    options["ray_actor_options"]["num_cpus"] = num_cpus
    for key, value in (deployment or {}).items():
        if value is None:
            options.pop(key, None)
        else:
            options[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def post(served, path: str, data=None, files=None, token: str | None = "session", **params) -> requests.Response:
    """POST to a started server (`served.url`, `served.token`); token None sends none."""
    headers = {"Authorization": f"Bearer {served.token if token == 'session' else token}"} if token else {}
    return requests.post(f"{served.url}{path}", data=data, files=files, params=params, headers=headers,
                         timeout=TIMEOUT)


def split_images(parquet_root: Path) -> dict[str, bytes]:
    """The PNG bytes of a Parquet dataset by the row ids the batch job gave them (`<file>#<row>`)."""
    images = {}
    for file in sorted(parquet_root.rglob("*.parquet")):
        column = pq.read_table(file).column("image").to_pylist()
        name = file.relative_to(parquet_root).as_posix()
        images.update({f"{name}#{row}": (cell["bytes"] if isinstance(cell, dict) else cell)
                       for row, cell in enumerate(column)})
    return images
