"""The stop event: SIGINT and SIGTERM (Ctrl-C, ``docker stop``, a scheduler) set it.

A process makes one :class:`StopEvent`, installs it, and passes it down to whatever loops
or waits: the trial loop checks it before claiming a trial and waits on it instead of
sleeping, and a trial that fails while it is set was interrupted, not broken. The first
signal also raises :class:`KeyboardInterrupt` in the main thread, so that training, a lock
wait or a server stops at once rather than at its next check.

Only the first signal raises: a second Ctrl-C would otherwise interrupt the very clean-up
the first started (the requeue of the running trial, Optuna's tell), leaving a trial failed
and counted, or RUNNING with no one to finish it. The launcher, waiting for its workers to
stop, asks for the next one again (:meth:`StopEvent.rearm`) to kill them at once. Nor does a
signal raise inside a storage call (:func:`critical`): its interrupt is raised when the call
returns, so no transaction is cut in two.

Python runs a signal handler between any two bytecodes, garbage-collection callbacks
included, and drops an exception raised there ("Exception ignored in ..."). Such a lost
interrupt is not printed: the event is set all the same, and the trial loop and every batch
of training check it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["StopEvent", "critical"]

_installed: StopEvent | None = None


class StopEvent:
    """Whether this process has been asked to stop, and by which signal."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum: int | None = None
        self._raised = False  # a signal's KeyboardInterrupt was raised
        self._owed = False  # a signal came inside a critical section: raise when it ends
        self._critical = 0  # storage calls under way in the main thread

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
        global _installed
        _installed = self
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        previous = sys.unraisablehook

        def lost_interrupt(unraisable: Any) -> None:
            if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and self.is_set()):
                previous(unraisable)

        sys.unraisablehook = lost_interrupt

    def rearm(self) -> None:
        """Let the next signal raise :class:`KeyboardInterrupt` again."""
        self._raised = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set(signum)
        if self._raised:
            return  # its clean-up is under way: let it finish
        if self._critical:
            self._owed = True  # raised when the storage call ends
            return
        self._raised = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section no signal cuts: in the main thread of a process with an installed
    :class:`StopEvent`, a signal that arrives inside it raises when it ends (if it ends
    normally). Elsewhere, a plain block."""
    stop = _installed
    if stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop._critical += 1
    try:
        yield
    finally:
        stop._critical -= 1
    if not stop._critical and stop._owed:
        stop._owed, stop._raised = False, True
        raise KeyboardInterrupt
