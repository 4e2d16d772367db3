"""The stop event: SIGINT and SIGTERM (Ctrl-C, ``docker stop``, a scheduler) set it.

A process makes one :class:`StopEvent`, installs it, and passes it down to whatever loops
or waits: the trial loop checks it before claiming a trial and waits on it instead of
sleeping, and a trial that fails while it is set was interrupted, not broken. The first
signal also raises :class:`KeyboardInterrupt` in the main thread, so that training, a lock
wait or a server stops at once rather than at its next check.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopEvent"]


class StopEvent:
    """Whether this process has been asked to stop, and by which signal."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, signum: int | None = None) -> None:
        self.signum = signum
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once if the stop was asked for."""
        return self._event.wait(seconds)

    def install(self) -> None:
        """Handle SIGINT and SIGTERM alike, even where a shell started the process with
        SIGINT ignored (``cmd &``). Call from the main thread."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set(signum)
        raise KeyboardInterrupt
