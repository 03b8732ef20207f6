"""What a person sees while medray works, and where everything else goes.

The terminal gets medray's own lines only: what it is about to do, one line per epoch, one progress
bar per long stage, the data report, warnings that matter, the summary. Everything Ray, Ray Data and
TensorFlow print (Python loggers and C++ alike, on the driver and, through Ray's log_to_driver, on
every worker) goes to `<run>/logs/ray.log`; `--verbose` shows it live as well.

The redirect works on file descriptors 1 and 2, not only on `sys.stdout`: TensorFlow's and Ray's
C++ code writes to them directly. Under `ray job submit` the job's log is the driver's stdout, so
`ray job logs` shows the same clean lines.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, TextIO

from tqdm import tqdm

LOG_FILE = "ray.log"
# The terminal while a run's logs are redirected; None otherwise (medray's lines go to sys.stdout).
_terminal: TextIO | None = None


def say(line: str) -> None:
    """One line of medray's own on the terminal, whatever else is redirected."""
    stream = _terminal or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def warn(line: str) -> None:
    """A warning a user must see (a check failed, rows skipped): on the terminal, never only in the log."""
    say(f"warning: {line}")


class _Capture:
    """Descriptors 1 and 2 pointed at a log file (through a copying thread if verbose)."""

    def __init__(self, verbose: bool):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.streams = sys.stdout, sys.stderr
        # Until a stage knows its run folder, the log collects in a temporary file.
        self.log = tempfile.TemporaryFile()
        self.moved = False
        self.tee = None
        if verbose:
            read_end, self.target = os.pipe()
            self.tee = threading.Thread(target=self._copy, args=(read_end, os.dup(self.saved[1])), daemon=True)
            self.tee.start()
        else:
            self.target = self.log.fileno()
        self.terminal = open(os.dup(self.saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        for fd in (1, 2):
            os.dup2(self.target, fd)
        # Python-level writers (Ray's echo of worker output, its loggers, warnings) follow
        # sys.stdout/stderr, which pytest and others may have replaced with objects that bypass
        # descriptor 1 and 2. A stream over descriptor 1 itself follows every later dup2.
        sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)

    def move_to(self, log_path: Path) -> None:
        if self.moved:
            return
        sys.stdout.flush()
        log = open(log_path, "ab", buffering=0)
        copied = _append_from(self.log.fileno(), 0, log)
        previous, self.log, self.moved = self.log, log, True
        if self.tee is None:
            self.target = log.fileno()
            for fd in (1, 2):
                os.dup2(self.target, fd)
            _append_from(previous.fileno(), copied, log)  # what arrived while copying
        previous.close()

    def _copy(self, read_end: int, terminal: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for chunk in iter(lambda: pipe.read(65536), b""):
                self.log.write(chunk)
                os.write(terminal, chunk)
        os.close(terminal)

    def close(self) -> None:
        sys.stdout.flush()
        sys.stdout, sys.stderr = self.streams
        for fd in (1, 2):
            os.dup2(self.saved[fd], fd)
            os.close(self.saved[fd])
        self.terminal.close()
        if self.tee is not None:
            os.close(self.target)
            # Processes Ray started meanwhile may hold the pipe open: the copying thread is a daemon.
            self.tee.join(timeout=2)
        self.log.close()


def _append_from(fd: int, offset: int, log) -> int:
    """Copy a file's bytes from `offset` on into `log`; pread leaves the offset that writers share alone."""
    while chunk := os.pread(fd, 1 << 20, offset):
        log.write(chunk)
        offset += len(chunk)
    return offset


_capture: _Capture | None = None


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """From here on only `say` reaches the terminal; everything else written to stdout and stderr
    is logged (and, if `verbose`, shown as well). A stage that creates a run folder calls
    `keep_log_in` to give the log its place; without one the log is dropped at the end."""
    global _capture, _terminal
    if _capture is not None:
        yield
        return
    _capture = _Capture(verbose)
    _terminal = _capture.terminal
    try:
        yield
    finally:
        capture, _capture, _terminal = _capture, None, None
        capture.close()



def keep_log_in(log_dir: Path) -> Path:
    """`log_dir/ray.log` holds everything logged so far and from now on (when `quiet` is on)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if _capture is not None:
        _capture.move_to(log_dir / LOG_FILE)
    return log_dir / LOG_FILE


class ProgressBar:
    """One bar for a long stage, redrawn in place on a terminal; on a log or pipe (e.g. `ray job
    logs`), a plain line at every quarter instead of a stream of carriage returns.

    `total` may be None (unknown); `done` counts work finished before this run (a resumed stage).
    """

    def __init__(self, stage: str, total: int | None, unit: str = "images", done: int = 0):
        self.stage, self.total, self.unit, self.done = stage, total, unit, done
        stream = _terminal or sys.stdout
        self._bar = None
        if stream.isatty():
            self._bar = tqdm(total=total, initial=done, desc=stage, unit=f" {unit}", file=stream,
                             dynamic_ncols=True)
        else:
            say(f"{stage}: {self._count()}")
        self._quarters_said = self._quarters()

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self._quarters() > self._quarters_said:
            self._quarters_said = self._quarters()
            say(f"{self.stage}: {self._count()}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.total is None or self._quarters_said < 4:  # the last line says how much was done
            say(f"{self.stage}: {self._count()}")

    def _quarters(self) -> int:
        return 4 * self.done // self.total if self.total else 0

    def _count(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

