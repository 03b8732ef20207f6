"""The one error type a user sees: a sentence naming the file, row or key and what to do.

Errors raised inside Ray workers (decode tasks, map_batches actors, training workers, Tune trials)
reach the driver wrapped in Ray's exceptions, often with only the text of the worker's traceback
left. `user_error` is the one boundary that turns any of them back into a one-line MedrayError.
"""

from __future__ import annotations

import re

# How a medray error (MedrayError or a subclass such as BadImage) reads once Ray has turned a
# worker's traceback into text.
_IN_TRACEBACK = re.compile(r"medray\.[\w.]*\.(?:MedrayError|BadImage): (.+)")
# The last line of a Python traceback: "ZeroDivisionError: division by zero", "PIL.X.Error: ...".
_EXCEPTION_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)): (.*)$")
# Ray's own exceptions live in ray.*; the worker's original exception is the innermost one that is not Ray's.
_RAY_PREFIX = "ray."


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
    texts = []
    for current in _chain(error):
        texts += [str(current), getattr(current, "traceback_str", "")]
        if isinstance(current, MedrayError) and not hasattr(current, "cause"):
            return current
    for text in texts:
        match = _IN_TRACEBACK.search(text)
        if match:
            return MedrayError(match.group(1))
    return None


def user_error(error: BaseException) -> MedrayError | None:
    """One line for the user: the MedrayError behind `error`, or, when a Ray worker failed with an
    exception medray did not foresee, that exception's type and message (without Ray's traceback).
    None for a driver-side error that is not the user's: a bug whose traceback should be shown."""
    found = find_user_error(error)
    if found is not None or not _from_ray(error):
        return found
    return MedrayError(f"a Ray worker failed with {worker_exception(error)}; if your data or config "
                       "caused it, fix that, otherwise please report it with the Ray logs (/tmp/ray/session_latest)")


def worker_exception(error: BaseException) -> str:
    """'TypeError: message' of the worker-side exception inside Ray's wrappers."""
    for current in reversed(_chain(error, implicit=False)):
        if not _is_ray_type(current):
            return _one_line(f"{type(current).__name__}: {current}")
    for current in _chain(error, implicit=False):  # only Ray's types are left: read their traceback text
        found = exception_in_traceback(str(current) + "\n" + getattr(current, "traceback_str", ""))
        if found:
            return found
    return _one_line(f"{type(error).__name__}: {error}")


def exception_in_traceback(text: str) -> str | None:
    """The first 'Type: message' line of a traceback's text that is not one of Ray's wrappers
    (e.g. from a Tune trial's error.txt)."""
    for line in text.splitlines():
        match = _EXCEPTION_LINE.match(line.strip())
        if match and not match.group(1).startswith(_RAY_PREFIX):
            return line.strip()
    return None


def _chain(error: BaseException, implicit: bool = True) -> list[BaseException]:
    """`error` and every exception it wraps, outermost first; with implicit=False only the links Ray
    sets on purpose (a task's `.cause`, Ray Train's `.worker_failures`), not whatever Python's
    `__context__` caught along the way (Ray's own StopIteration, for one)."""
    pending, seen, chain = [error], set(), []
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        failures = getattr(current, "worker_failures", None) or {}
        pending += [getattr(current, "cause", None), *failures.values()]
        pending += [current.__cause__, current.__context__] if implicit else []
    return chain


def _is_ray_type(error: BaseException) -> bool:
    return any(f"{cls.__module__}.".startswith(_RAY_PREFIX) for cls in type(error).__mro__[:2])


def _from_ray(error: BaseException) -> bool:
    return any(_is_ray_type(current) for current in _chain(error))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text
