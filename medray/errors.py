"""The one error type a user sees: a sentence naming the file, row or key and what to do."""

from __future__ import annotations

import re

# How a MedrayError reads once Ray has turned a worker's traceback into text.
_IN_TRACEBACK = re.compile(r"medray\.errors\.MedrayError: (.+)")


class MedrayError(Exception):
    """A problem with the user's input or setup, reported as one line instead of a traceback."""


class BadImage(MedrayError):
    """One row that cannot be used; skipped and counted under `reason` with data.on_bad_image: skip."""

    # A default keeps the exception picklable across Ray workers (pickle passes only the message).
    def __init__(self, message: str, reason: str = "corrupt or truncated"):
        super().__init__(message)
        self.reason = reason


def find_user_error(error: BaseException) -> MedrayError | None:
    """The MedrayError behind an exception, however Ray wrapped it on its way from a worker.

    Ray keeps a task's exception in `.cause`, Ray Train keeps each worker's in
    `.worker_failures`, and where only the text of a traceback survived, the text is read.
    """
    pending, seen, texts = [error], set(), []
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), getattr(current, "traceback_str", "")]
        if isinstance(current, MedrayError) and not hasattr(current, "cause"):
            return current
        failures = getattr(current, "worker_failures", None) or {}
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__,
                    *failures.values()]
    for text in texts:
        match = _IN_TRACEBACK.search(text)
        if match:
            return MedrayError(match.group(1))
    return None
