"""The kinds of failure a sweep tells apart, under one base; each says what happens next.

* :class:`UserError`: the input is wrong (study file, option, storage URL, data files). The
  command prints its one line and exits with code 2; nothing has been written.
* :class:`TrialFailure`: one trial could not finish (it diverged). It is recorded on the trial
  and the worker goes on with the next one.
* :class:`StorageUnavailable`: the storage stopped answering for longer than the retry window.
  The process stops (exit code 3); every trial it completed is in the storage already.
* :class:`Interrupted`: Ctrl-C or SIGTERM. Running trials were requeued; the process exits
  with code 130 and the same command resumes.
"""

from __future__ import annotations

__all__ = ["Interrupted", "StorageUnavailable", "SweepError", "TrialFailure", "UserError"]


class SweepError(Exception):
    """Base of every error sweep raises on purpose; ``exit_code`` is the command's."""

    exit_code = 1


class UserError(SweepError):
    """Bad input from the user: one line that names what is wrong and how to fix it."""

    exit_code = 2


class TrialFailure(SweepError):
    """One trial failed; the reason is recorded on the trial and the sweep goes on."""


class StorageUnavailable(SweepError):
    """The storage did not answer within the retry window; the process stops."""

    exit_code = 3


class Interrupted(SweepError):
    """Stopped by a signal; running trials were requeued, so the same command resumes."""

    exit_code = 130
