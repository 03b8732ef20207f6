"""What `medray serve` reads: the application's `args` in a Ray Serve config file (configs/serve.yaml).

The same YAML starts the server three ways: `medray serve RUN_OR_MODEL --config configs/serve.yaml`,
`serve run configs/serve.yaml` and `serve deploy configs/serve.yaml`. Replicas, autoscaling and the
CPUs of each replica are Serve's own deployment options in that file; the keys here are medray's.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from medray.config import CamMethodName, _Section, _merge_union_errors, describe_error, read_yaml_mapping
from medray.errors import MedrayError

# The bearer token comes from here when set; otherwise one is generated and printed at start.
TOKEN_ENV = "MEDRAY_SERVE_TOKEN"
# The deployment's name in the Serve config file (its `deployments:` entry).
DEPLOYMENT_NAME = "MedrayModel"


class ServeSettings(_Section):
    # A run folder (local or s3://...) holding model.keras, or a .keras/.h5 file trained elsewhere.
    model: str
    # For a model file only: its classes in output order, and what it expects of [0, 255] pixels
    # (the same names as explain.preprocess).
    class_names: list[str] | None = None
    preprocess: Literal["none", "unit", "symmetric", "imagenet", "mobilenet_v2", "densenet169", "inception_v3",
                        "xception", "resnet50", "efficientnet_b0"] = "unit"
    # A model file with Lambda layers runs their code as it loads: only for authors you trust.
    trust_model_code: bool = False
    cam_layer: str | list[str] | None = None
    # The maps `?explain=` may ask for; the first is what `?explain=true` means.
    methods: list[CamMethodName] = Field(default_factory=lambda: ["gradcam"], min_length=1)
    # Requests that arrive together share one forward (and backward) pass: at most this many, and a
    # request waits at most this long for others to join it.
    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10)
    # TensorFlow's intra- and inter-op threads in each replica: two replicas on one node each get
    # their share of its cores instead of both spinning up one thread per core.
    threads_per_replica: int = Field(1, ge=1, le=256)
    max_body_bytes: int = Field(20_000_000, gt=0)
    # Checked before any pixel is decoded (a decompression bomb never allocates its memory); unset:
    # the run's data.max_image_pixels.
    max_image_pixels: int | None = Field(None, gt=0)
    # Images in one /predict/batch request.
    max_images_per_request: int = Field(64, ge=1, le=4096)
    auth: Literal["token", "none"] = "token"


def validate_settings(raw: dict, source: str = "serve config") -> ServeSettings:
    try:
        return ServeSettings.model_validate(raw)
    except ValidationError as error:
        lines = _merge_union_errors([describe_error(item) for item in error.errors()])
        raise MedrayError(f"{source}, application args: " + "; ".join(lines)) from None


def read_serve_config(path: str | Path) -> dict:
    """The Serve config file as a mapping, with exactly one application (medray's)."""
    raw = read_yaml_mapping(Path(path), "serve config", "pass --config with a Serve config YAML, e.g. configs/serve.yaml")
    applications = raw.get("applications")
    if not isinstance(applications, list) or len(applications) != 1 or not isinstance(applications[0], dict):
        raise MedrayError(f"serve config {path}: `applications` must list exactly one application (medray's)")
    return raw


def resolve_token(settings: ServeSettings, announce=None) -> str | None:
    """The bearer token clients must send: $MEDRAY_SERVE_TOKEN, or a new random one announced
    (printed) once; None when settings.auth is "none"."""
    if settings.auth == "none":
        return None
    token = os.environ.get(TOKEN_ENV)
    if not token:
        token = secrets.token_urlsafe(32)
        (announce or _print_token)(token)
    return token


def token_digest(token: str | None) -> str | None:
    """Only the token's SHA-256 travels to the replicas (and into Serve's deployment state)."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


def _print_token(token: str) -> None:
    print(f"medray serve: clients must send 'Authorization: Bearer {token}' (set {TOKEN_ENV} to choose it)",
          file=sys.stderr, flush=True)
