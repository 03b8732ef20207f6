"""Start the application on Ray from a Serve config file, as `medray serve` and jobs/serve.py do.

`serve run configs/serve.yaml` needs none of this (it calls `medray.serve.app:build_app`); here the
command line's model, `--set` overrides, host and port are applied to the same file first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medray.config import apply_override
from medray.errors import MedrayError
from medray.serve.settings import DEPLOYMENT_NAME, read_serve_config, resolve_token, validate_settings

# Serve's own defaults for a config file without http_options; loopback unless asked otherwise.
DEFAULT_HTTP = {"host": "127.0.0.1", "port": 8000}


@dataclass(frozen=True)
class Started:
    url: str  # e.g. http://127.0.0.1:8000
    token: str | None


def start_server(model: str, config_path: str | Path | None = None, overrides: list[str] = (),
                 host: str | None = None, port: int | None = None, announce=None) -> Started:
    """Serve `model` (a run folder, local or s3://..., or a .keras/.h5 file) with the settings of
    `config_path` (the args and deployment options of its one application); returns once every
    replica has loaded the model. Joins $RAY_ADDRESS's cluster, or starts a local one.
    Raises MedrayError naming the key or location that is wrong."""
    import ray
    from ray import serve

    from medray.cluster import worker_env
    from medray.serve.app import bind

    raw = read_serve_config(config_path) if config_path else {"applications": [{"name": "medray"}]}
    application = raw["applications"][0]
    args = {**(application.get("args") or {}), "model": str(model)}
    for override in overrides:
        apply_override(args, override)
    settings = validate_settings(args, str(config_path or "medray serve"))
    options = deployment_options(application, config_path)
    http = {**DEFAULT_HTTP, **(raw.get("http_options") or {}),
            **({"host": host} if host else {}), **({"port": port} if port else {})}
    token = resolve_token(settings, announce)
    app = bind(settings, token, options)  # checks the model's location before Ray starts
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": worker_env()})
    serve.start(http_options=http)
    route = application.get("route_prefix", "/")
    serve.run(app, name=application.get("name", "medray"), route_prefix=route, blocking=False)
    return Started(f"http://{http['host']}:{http['port']}{route.rstrip('/')}", token)


def deployment_options(application: dict, config_path) -> dict:
    """The `deployments:` entry of medray's deployment (replicas, autoscaling, CPUs per replica)."""
    entries = application.get("deployments") or []
    chosen = [entry for entry in entries if isinstance(entry, dict) and entry.get("name") == DEPLOYMENT_NAME]
    if len(chosen) != len(entries):
        raise MedrayError(f"serve config {config_path}: `deployments` may only hold name: {DEPLOYMENT_NAME}")
    return {key: value for key, value in (chosen[0] if chosen else {}).items() if key != "name"}
