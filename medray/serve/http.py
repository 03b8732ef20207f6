"""The HTTP side of a replica's answers: request errors, the body limit, the JSON of a prediction.

Apart from the deployment class (medray.serve.app) because Serve pickles that class as it is
decorated, mid-import: a helper defined below it in the same module would not exist yet."""

from __future__ import annotations

import base64
import logging

import numpy as np
from starlette.requests import Request

logger = logging.getLogger("ray.serve")


class RequestError(Exception):
    """A request refused with `status` and a one-line `message` (returned as JSON)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is longer than `limit` bytes: a declared length is
    checked before anything is read, and a chunked body is counted as it arrives."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared)} bytes, over args.max_body_bytes={limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over args.max_body_bytes={limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise RequestError(400, "the request has no body; send a PNG, JPEG or DICOM image")
    return body


def replayed(request: Request, body: bytes) -> Request:
    """The request again, its body already read: Starlette's form parser reads from `receive`."""
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def describe_prediction(model, prediction, pixels: np.ndarray, method: str | None) -> dict:
    """One image's JSON answer: probabilities per class (or label), the prediction, the
    probabilities after the run's temperature scaling (`calibrated_probabilities`, when the run
    has calibration.json; the prediction stays the raw one's, as in the batch job) and, with a
    method, per class or label explained and CAM layer the raw map and its overlay PNG (base64)."""
    from medray.explain.overlay import overlay_png

    classes = list(model.task.class_names)
    predicted = np.asarray(prediction.prediction)
    answer = {"probabilities": {name: float(value) for name, value in zip(classes, prediction.probabilities)},
              # a class for single-label and binary tasks, the labels found for multi-label ones
              "prediction": (classes[int(predicted)] if predicted.ndim == 0
                             else [name for name, present in zip(classes, predicted) if present])}
    if prediction.calibrated is not None:
        answer["calibrated_probabilities"] = {name: float(value) for name, value in zip(classes, prediction.calibrated)}
    if method is not None:
        answer["explanation"] = {
            "method": method,
            "maps": [{"target": classes[target], "cam_layer": layer, "shape": list(cam.shape),
                      "map": cam.astype(float).tolist(),
                      "overlay_png_base64": base64.b64encode(overlay_png(pixels, cam)).decode("ascii")}
                     for target, layers in prediction.maps.items() for layer, cam in layers.items()]}
    return answer


def limit_threads(threads: int) -> None:
    from medray.keras_setup import tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a reused worker): its pools stay
        logger.warning("medray serve: TensorFlow was already initialised; threads_per_replica not applied")
