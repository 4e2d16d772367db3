"""A worker replaces its own process every N trials, so that what a backend keeps per trial
is given back.

TensorFlow keeps megabytes of a process's memory for every model it has trained, which
neither Python's collector, ``keras.backend.clear_session``, removing the traced functions
from TensorFlow's context nor ``malloc_trim`` gives back; PyTorch and JAX workers grow too,
by less (``python -m benchmarks.memory`` measures each; docs/performance.md has its figures).
So a worker, between two trials and with none running, ``exec``s its own command line every
N trials (25 unless told), on every backend: the same PID (a launcher, Docker and a scheduler
see one process throughout), a fresh heap. The new process reads its data again and joins the
study as any worker does; no trial is lost, since none is running. ``$SWEEP_RECYCLE_TRIALS``
sets N (0: never; :mod:`sweep.settings`).

The Python API (:func:`sweep.run`) trains in its caller's process, which it cannot replace.
"""

from __future__ import annotations

import logging
import os
import sys

from sweep.settings import ENV, current

__all__ = ["RECYCLE_ENV", "every", "replace_if_due"]

log = logging.getLogger(__name__)

RECYCLE_ENV = ENV["recycle_trials"].name


def every() -> int | None:
    """After how many trials a worker replaces its process; None: never."""
    return current().recycle_trials or None


def replace_if_due(most: int | None, ran: int, finished: int, budget: int) -> None:
    """``exec`` this process's own command line again (same PID, environment and folder, a
    fresh interpreter) if it stopped at its ``most`` trials, having run ``ran``, and the study
    (``finished`` of ``budget``) goes on; else return."""
    if most is None or ran < most or finished >= budget:
        return
    log.info(
        "replacing this worker's process after %d trials, which gives back the memory its "
        "backend kept (%s)",
        ran,
        RECYCLE_ENV,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
