"""Sweep's Optuna storage: Optuna's RDBStorage with four concerns added, one module each.

* :mod:`sweep.rdb.calls`: every call that reaches the database rides out a lost connection.
* :mod:`sweep.rdb.claims`: a trial a worker claims gets its first heartbeat in the claim's
  own transaction, so a worker that dies right after claiming cannot leave it RUNNING forever.
* :mod:`sweep.rdb.fast`: the hot path in plain SQL (reading trials, writing a trial's
  attrs, counting the budget).
* :mod:`sweep.rdb.sqlite`: on SQLite, WAL journaling, and reads that never wait for a writer.

Imported where a storage opens (:func:`sweep.storage.open_storage`), not with ``sweep``: it
imports Optuna and SQLAlchemy. A study opened on it pickles as one on a stock RDBStorage does.
"""

from __future__ import annotations

from typing import Any

from sweep.rdb.calls import RetriedCalls
from sweep.rdb.claims import ClaimBeats, claiming
from sweep.rdb.sqlite import configure_sqlite

__all__ = ["SweepStorage", "claiming"]


class SweepStorage(RetriedCalls, ClaimBeats):
    """Optuna's RDBStorage that rides out a lost connection, whose claims beat at once, whose
    hot path is plain SQL, and whose SQLite reads never wait for a writer."""

    def configure_engine(self) -> None:
        """Hook the claims and SQLite's transaction policy into the engine and session;
        again when the storage is unpickled (RDBStorage rebuilds both there)."""
        self.watch_claims()
        configure_sqlite(self.engine)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self.configure_engine()
