"""SIGINT (Ctrl-C) and SIGTERM (kill, systemd, Slurm, Kubernetes) stop training the same way.

The first signal only asks: the loop finishes the step it is in, saves a checkpoint and
raises Stopped, so the checkpoint is always of a whole step (a signal that interrupted the
optimizer half-way would save half an update). A second signal raises KeyboardInterrupt at
once, for a loop stuck in something long; the last checkpoint then stands."""
from __future__ import annotations

import signal
import threading
from typing import Self


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal after saving; the CLI exits with 128 + signum."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """Context manager: while inside, SIGINT and SIGTERM set ``signum`` instead of killing.

    Outside the main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
