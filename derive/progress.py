"""Progress on long work: the library says what it is doing, the command line may show it.

The library calls :func:`update` at each stage (a step being verified, a column of a large
Jacobian, the PDF build). Nothing is shown unless a reporter is installed; the command line
installs :class:`Terminal` when stderr is a terminal and ``--quiet`` is not given. The terminal
reporter stays silent for work that finishes within ``DELAY`` seconds, so quick commands print
nothing but their result.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Protocol, TextIO

DELAY = float(os.environ.get("DERIVE_PROGRESS_DELAY", "1.0"))
"""Seconds of work before the first progress line appears."""


class Reporter(Protocol):
    def update(self, stage: str, done: int | None = None, total: int | None = None) -> None: ...


_reporter: Reporter | None = None


def update(stage: str, done: int | None = None, total: int | None = None) -> None:
    """Report the current stage (and how far it is, when countable)."""
    if _reporter is not None:
        _reporter.update(stage, done, total)


def finish() -> None:
    """End the progress display before the result is printed, so that nothing is written after
    the progress line on the same terminal line: the terminal reporter erases it and stops."""
    close = getattr(_reporter, "close", None)
    if close is not None:
        close()


def install(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` (None: silence); return the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


class Terminal:
    """One status line on a terminal, rewritten in place by a background thread every tenth of a
    second once the work has run for DELAY seconds; :meth:`close` erases it (once, however often
    it is called)."""

    def __init__(self, stream: TextIO = sys.stderr, delay: float = DELAY):
        self.stream, self.delay = stream, delay
        self.start = time.monotonic()
        self.text = "starting"
        self.shown = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def update(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        count = f" {done}/{total}" if done is not None and total else ""
        with self.lock:
            self.text = f"{stage}{count}"

    def _run(self) -> None:
        while not self.stopped.wait(0.1):
            elapsed = time.monotonic() - self.start
            if elapsed >= self.delay:
                with self.lock:
                    self._write(f"derive: {self.text} ({elapsed:.0f} s)")

    def _write(self, line: str) -> None:
        padding = " " * max(0, self.shown - len(line))
        self.stream.write(f"\r{line}{padding}")
        self.stream.flush()
        self.shown = len(line)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0
