"""The HTTP application: one Ray Serve deployment whose replicas each hold one `ServedModel`.

    POST /predict[?explain=gradcam]   one image: the raw body, or one file of a multipart form
    POST /predict/batch[?explain=...] several images: the files of a multipart form, in order
    GET  /info                        classes, input size, preprocessing, methods, CAM layers
    GET  /healthz                     "ok" once the replica has loaded its model (no token needed)

Requests are decoded as they arrive; `serve.batch` then gathers the decoded images of requests that
arrive together (up to args.max_batch_size, waiting at most args.batch_wait_timeout_s) into one
forward (and, with explain, backward) pass. Every refusal is a 4xx JSON `{"error": ...}` that names
what is wrong; nothing a request carries ever becomes a file path.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) from
# the class Serve pickled by value, whose functions keep only the globals their code uses.
import asyncio
import hashlib
import hmac
import logging
from collections import defaultdict

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.datastructures import UploadFile

from medray.errors import BadImage
from medray.serve.http import RequestError, describe_prediction, limit_threads, read_limited, replayed
from medray.serve.model import check_model_location
from medray.serve.settings import DEPLOYMENT_NAME, ServeSettings, resolve_token, token_digest, validate_settings

logger = logging.getLogger("ray.serve")
api = FastAPI(title="medray", docs_url=None, redoc_url=None, openapi_url=None)
# What `?explain=` may say for the first configured method.
EXPLAIN_DEFAULT = ("true", "1", "yes")


@api.exception_handler(RequestError)
async def refused(request: Request, error: RequestError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status)


@api.exception_handler(Exception)
async def failed(request: Request, error: Exception) -> JSONResponse:
    # The traceback goes to the replica's log, never to the client.
    logger.exception("medray serve: request failed")
    return JSONResponse({"error": f"internal error ({type(error).__name__}); see the replica's log"}, status_code=500)


# Serve pickles the class as it is decorated, while this module is still being imported: whatever
# its methods call must be defined above this line (hence medray.serve.http).
@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class MedrayModel:
    def __init__(self, settings: dict, token_sha256: str | None):
        from medray.serve.model import ServedModel

        self.settings = validate_settings(settings)
        limit_threads(self.settings.threads_per_replica)  # before TensorFlow runs its first operation
        self.token_sha256 = token_sha256
        self.model = ServedModel(self.settings)
        self.infer.set_max_batch_size(self.settings.max_batch_size)
        self.infer.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/info")
    async def info(self, request: Request) -> dict:
        self.check_token(request)
        return {**self.model.info(), "max_batch_size": self.settings.max_batch_size,
                "max_body_bytes": self.settings.max_body_bytes}

    @api.post("/predict")
    async def predict(self, request: Request, explain: str | None = None) -> dict:
        self.check_token(request)
        method = self.explain_method(explain)
        images = await self.read_images(request)
        if len(images) != 1:
            raise RequestError(400, f"/predict takes one image, the request holds {len(images)}; "
                                    "send several to /predict/batch")
        return {**self.identity(), **await self.infer((self.decode(*images[0]), method))}

    @api.post("/predict/batch")
    async def predict_batch(self, request: Request, explain: str | None = None) -> dict:
        self.check_token(request)
        method = self.explain_method(explain)
        images = await self.read_images(request)
        if len(images) > self.settings.max_images_per_request:
            raise RequestError(413, f"the request holds {len(images)} images, over args.max_images_per_request="
                                    f"{self.settings.max_images_per_request}; send fewer per request")
        decoded = [self.decode(where, content) for where, content in images]
        answers = await asyncio.gather(*(self.infer((pixels, method)) for pixels in decoded))
        return {**self.identity(), "results": list(answers)}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def infer(self, items: list[tuple[np.ndarray, str | None]]) -> list[dict]:
        # In a thread: the event loop keeps reading and decoding the requests that form the next batch.
        return await asyncio.to_thread(self.answer_batch, items)

    def answer_batch(self, items: list[tuple[np.ndarray, str | None]]) -> list[dict]:
        """One pass per explain method among the items (and one for those without), in item order."""
        by_method = defaultdict(list)
        for index, (_, method) in enumerate(items):
            by_method[method].append(index)
        answers: list[dict] = [{}] * len(items)
        for method, indices in by_method.items():
            pixels = np.stack([items[index][0] for index in indices])
            for index, image, prediction in zip(indices, pixels, self.model.predict(pixels, method)):
                answers[index] = describe_prediction(self.model, prediction, image, method)
        return answers

    # --- the request's checks ------------------------------------------------------------------

    def check_token(self, request: Request) -> None:
        if self.token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise RequestError(401, "missing bearer token: send the header 'Authorization: Bearer <token>' "
                                    "(printed when the server started, or $MEDRAY_SERVE_TOKEN)")
        if not hmac.compare_digest(hashlib.sha256(token.strip().encode()).hexdigest(), self.token_sha256):
            raise RequestError(401, "wrong bearer token")

    def explain_method(self, explain: str | None) -> str | None:
        methods = self.model.methods
        if explain is None or explain.lower() in ("", "false", "0", "no"):
            return None
        if explain.lower() in EXPLAIN_DEFAULT:
            return methods[0]
        if explain not in methods:
            raise RequestError(400, f"explain={explain[:40]!r} is not served here; choose one of {', '.join(methods)} "
                                    "(args.methods in the serve config)")
        return explain

    async def read_images(self, request: Request) -> list[tuple[str, bytes]]:
        """(where, bytes) of each image: the raw body, or each file of a multipart form."""
        body = await read_limited(request, self.settings.max_body_bytes)
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return [("the request body", body)]
        form = await replayed(request, body).form(max_files=self.settings.max_images_per_request + 1, max_fields=16)
        files = [(f"part {number} (field {name[:40]!r})", await value.read())
                 for number, (name, value) in enumerate(form.multi_items(), start=1) if isinstance(value, UploadFile)]
        if not files:
            raise RequestError(400, "the multipart form holds no file; send the image as a file part "
                                    "(curl -F file=@scan.png) or as the raw body")
        return files

    def decode(self, where: str, content: bytes) -> np.ndarray:
        try:
            return self.model.decode(content, where)
        except BadImage as error:
            raise RequestError(413 if error.reason == "over pixel limit" else 400, str(error)) from None

    def identity(self) -> dict:
        return {"run_id": self.model.run_id, "model_version": self.model.version}


def build_app(args: dict) -> serve.Application:
    """The application builder `serve run` / `serve deploy` call with the config file's `args`:
    checked here, on the machine that starts it, so a wrong path fails before any replica starts."""
    settings = validate_settings(args)
    return bind(settings, resolve_token(settings))


def bind(settings: ServeSettings, token: str | None, options: dict | None = None) -> serve.Application:
    check_model_location(settings)
    return MedrayModel.options(**(options or {})).bind(settings.model_dump(), token_digest(token))
