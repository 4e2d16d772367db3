"""Every use of Optuna's private API, each with the reason no public API does the job.

Nothing else in sweep touches a private Optuna name. ``tests/test_optuna_contract.py``
checks that each name listed in :data:`PRIVATE_NAMES` still exists, so an Optuna release that
drops one fails loudly there rather than in a worker; ``pyproject.toml`` bounds Optuna to
the major version those tests pass on.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sweep.retry import retrying

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OPTIMIZE_LOGGER",
    "PRIVATE_NAMES",
    "forget_artifact",
    "study_id",
    "trial_id",
]  # and SweepStorage, built on first use

# Optuna logs every failed trial with its traceback under this private module's logger; the
# trial loop reports each failure once itself, so it filters these lines out.
OPTIMIZE_LOGGER = "optuna.study._optimize"

# (module, attribute path): what this module relies on.
PRIVATE_NAMES = (
    ("optuna.study._optimize", "_logger"),
    ("optuna.study", "Study._study_id"),
    ("optuna.trial", "Trial._trial_id"),
    ("optuna.trial", "FrozenTrial._trial_id"),
    ("optuna.storages", "RDBStorage._get_stale_trial_ids"),
    ("optuna.storages", "RDBStorage._create_new_trial"),
    ("optuna.storages", "RDBStorage._set_trial_param"),
    ("optuna.storages", "RDBStorage._get_trials"),
    ("optuna.storages", "RDBStorage._get_best_trial_id"),
    ("optuna.storages._rdb.models", "TrialHeartbeatModel"),
    ("optuna.storages._rdb.models", "TrialModel"),
    ("optuna.artifacts._upload", "ARTIFACTS_ATTR_PREFIX"),
)


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage. Study has no public accessor; the public lookup by name
    (``get_study_id_from_name``) costs a query each time."""
    return int(study._study_id)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The trial's id in its storage, which heartbeats and state changes take. Public lookup
    by number costs two queries; this is on every trial's path."""
    return int(trial._trial_id)


def forget_artifact(storage: optuna.storages.BaseStorage, sid: int, artifact_id: str) -> None:
    """Unlist a study artifact whose file was removed. Optuna has no public call for it; this
    writes what optuna-dashboard's own "delete" writes (its meta set to null)."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    storage.set_study_system_attr(sid, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(None))


# Every storage call that reaches the database while a sweep runs: BaseStorage's public ones,
# and the private ones Optuna's _CachedStorage (what a Study wraps an RDBStorage in) calls on
# its backend, so those must be wrapped too. _create_new_trial is not idempotent: if a
# commit's reply is lost, the retry makes a second trial, RUNNING with no heartbeat; the stale
# check below fails it.
_RETRIED = (
    "create_new_study", "get_study_id_from_name", "get_study_name_from_id",
    "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "set_study_user_attr", "set_study_system_attr", "get_all_studies", "create_new_trial",
    "_create_new_trial", "set_trial_param", "_set_trial_param", "get_trial_param",
    "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial",
    "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id",
    "record_heartbeat", "_get_stale_trial_ids",
)  # fmt: skip


def _storage_class() -> type[Any]:
    # Built on first use, so that importing sweep does not import Optuna (``--help`` stays
    # fast); published under its module-level name, so that it pickles as RDBStorage does.
    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models

    class SweepStorage(optuna.storages.RDBStorage):
        """Optuna's RDBStorage that rides out a lost connection and a heartbeat never beaten.

        Published as ``sweep._optuna.SweepStorage``, so a study opened with it pickles as a
        stock RDBStorage's does.
        """

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            # Optuna's only hook for deciding which trials are stale, and it skips RUNNING
            # trials with no heartbeat row: a worker killed between claiming a trial and its
            # first beat would hold that trial RUNNING forever. datetime_start is written with
            # the writer's clock, as compared here.
            stale = super()._get_stale_trial_ids(study_id)
            grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
            cutoff = datetime.now() - grace
            running = self.get_all_trials(
                study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
            beating = set(self._trials_with_heartbeat(study_id))
            for t in running:
                start = t.datetime_start
                if trial_id(t) not in beating and start is not None and start < cutoff:
                    stale.append(trial_id(t))
            return sorted(set(stale))

        def configure_engine(self) -> None:
            """SQLite: WAL journaling, and every transaction takes the write lock when it
            begins. Re-applied when the storage is unpickled (RDBStorage rebuilds its engine).

            SQLite's default deferred transactions read first and upgrade to a write lock
            later; when another process wrote in between, the upgrade fails at once with
            "database is locked", whatever the busy timeout. BEGIN IMMEDIATE waits instead.
            """
            url = self.engine.url
            if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
                return  # an in-memory database lives in its one connection: leave it be
            with self.engine.connect() as conn:
                # WAL: readers (the dashboard, other workers) never block the writer.
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

            @sqlalchemy.event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            @sqlalchemy.event.listens_for(self.engine, "connect")
            def _connect(dbapi_conn: Any, _: Any) -> None:
                # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a killed or
                # crashed process loses nothing committed, and the database cannot be
                # corrupted; only a power cut can lose the last commits.
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")

            self.engine.dispose()  # connections opened before this point had the defaults

        def __setstate__(self, state: dict[Any, Any]) -> None:
            super().__setstate__(state)
            self.configure_engine()

        def _trials_with_heartbeat(self, study_id: int) -> list[int]:
            # Which trials have a heartbeat row is not exposed; read Optuna's own table.
            beat, trial = models.TrialHeartbeatModel, models.TrialModel
            query = (
                sqlalchemy.select(beat.trial_id)
                .join(trial, trial.trial_id == beat.trial_id)
                .where(trial.study_id == study_id)
            )
            with self.engine.connect() as conn:
                return [row[0] for row in conn.execute(query)]

    SweepStorage.__module__, SweepStorage.__qualname__ = __name__, "SweepStorage"
    for name in _RETRIED:
        setattr(SweepStorage, name, retrying(getattr(SweepStorage, name)))
    return SweepStorage


def __getattr__(name: str) -> Any:
    if name == "SweepStorage":
        globals()[name] = cls = _storage_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
