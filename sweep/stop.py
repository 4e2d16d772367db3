"""The stop event: SIGINT and SIGTERM (Ctrl-C, ``docker stop``, a scheduler) set it.

A process makes one :class:`StopEvent`, installs it, and passes it down to whatever loops
or waits: the trial loop checks it before claiming a trial and waits on it instead of
sleeping, and a trial that fails while it is set was interrupted, not broken. The first
signal also raises :class:`KeyboardInterrupt` in the main thread, so that training, a lock
wait or a server stops at once rather than at its next check.

Python runs a signal handler between any two bytecodes, garbage-collection callbacks
included, and drops an exception raised there ("Exception ignored in ..."). Such a lost
interrupt is not printed: the event is set all the same, and the trial loop and every batch
of training check it.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

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
        previous = sys.unraisablehook

        def lost_interrupt(unraisable: Any) -> None:
            if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and self.is_set()):
                previous(unraisable)

        sys.unraisablehook = lost_interrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set(signum)
        raise KeyboardInterrupt
