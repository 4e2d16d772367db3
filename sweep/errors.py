"""The kinds of failure a sweep tells apart.

* :class:`UserError`: the input is wrong (study file, CLI option, storage URL, data files).
  The CLI prints its one-line message and exits with code 2 before anything is written.
* :class:`TrialFailure`: one trial could not finish (divergence, out of memory). It is
  recorded on the trial and the worker goes on with the next one.
"""

from __future__ import annotations

__all__ = ["TrialFailure", "UserError"]


class UserError(Exception):
    """Bad input from the user: one line that names what is wrong and how to fix it."""


class TrialFailure(Exception):
    """One trial failed; the reason is recorded on the trial and the sweep goes on."""
