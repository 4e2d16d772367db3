"""A trial a worker claims gets its first heartbeat in the claim's own transaction.

Optuna's heartbeat thread beats only once the trial is claimed, and Optuna never calls a
RUNNING trial with no heartbeat row stale: a worker killed in between would hold its trial
forever. While this process claims (inside :func:`claiming`), the first beat is written in
the claim's transaction, so every trial a worker claimed has one. Trials made elsewhere
(``study.ask()``, ``optuna ask``) are left as Optuna leaves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models

__all__ = ["ClaimBeats", "claiming"]

_CLAIMS = "sweep_claims"  # the session's info key: trials this flush made RUNNING


class ClaimBeats(optuna.storages.RDBStorage):
    """RDBStorage whose claims, made inside :func:`claiming`, beat at once."""

    claiming = False

    def watch_claims(self) -> None:
        """Hook the session's events; again whenever the session is rebuilt (unpickling)."""
        for event, hook in (
            ("before_flush", self._note_claims),
            ("before_commit", self._beat_on_claim),
            ("after_rollback", self._forget_claims),
        ):
            sqlalchemy.event.listen(self.scoped_session, event, hook)

    def _note_claims(self, session: Any, *_: Any) -> None:
        # A trial becomes RUNNING when claimed: a new one at its insert, an enqueued one when
        # its state changes. (Optuna also inserts every trial RUNNING first and then sets its
        # real state, so the state is checked again at commit.)
        if not self.claiming:
            return
        running = optuna.trial.TrialState.RUNNING
        claims = session.info.setdefault(_CLAIMS, set())
        for obj in session.new:
            if isinstance(obj, models.TrialModel) and obj.state == running:
                claims.add(obj)
        for obj in session.dirty:
            if (
                isinstance(obj, models.TrialModel)
                and obj.state == running
                and sqlalchemy.inspect(obj).attrs.state.history.added
            ):
                claims.add(obj)

    def _beat_on_claim(self, session: Any) -> None:
        if not self.claiming:
            return
        session.flush()  # note what this commit would flush
        claims = session.info.pop(_CLAIMS, set())
        with session.no_autoflush:
            for trial in claims:
                if trial.state == optuna.trial.TrialState.RUNNING and not trial.heartbeats:
                    trial.heartbeats.append(models.TrialHeartbeatModel())

    def _forget_claims(self, session: Any, *_: Any) -> None:
        session.info.pop(_CLAIMS, None)


@contextlib.contextmanager
def claiming(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """While inside, a trial this process claims gets its first heartbeat in the claim's
    transaction (a no-op on a storage that is not sweep's)."""
    if not isinstance(storage, ClaimBeats):
        yield
        return
    storage.claiming = True
    try:
        yield
    finally:
        storage.claiming = False
