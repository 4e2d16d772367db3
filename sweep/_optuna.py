"""Every use of Optuna's private API, each with the reason no public API does the job.

Nothing else in sweep touches a private Optuna name. ``tests/test_optuna_contract.py``
checks that each name listed in :data:`PRIVATE_NAMES` still exists, so an Optuna release that
drops one fails loudly there rather than in a worker; ``pyproject.toml`` bounds Optuna to
the major version those tests pass on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import types
from collections.abc import Callable, Container, Iterator
from typing import TYPE_CHECKING, Any

from sweep.errors import StorageUnavailable
from sweep.retry import retrying

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OPTIMIZE_LOGGER",
    "PRIVATE_NAMES",
    "claiming",
    "fill_url_template",
    "forget_artifact",
    "reseed",
    "set_user_attrs",
    "study_id",
    "trial_id",
]  # and SweepStorage, built on first use

# Optuna logs every failed trial with its traceback under this private module's logger; the
# trial loop reports each failure once itself, so it filters these lines out.
OPTIMIZE_LOGGER = "optuna.study._optimize"

# (module, attribute path): what this module relies on.
PRIVATE_NAMES = (
    ("optuna.samplers._lazy_random_state", "LazyRandomState.rng"),
    ("optuna.study._optimize", "_logger"),
    ("optuna.study", "Study._study_id"),
    ("optuna.trial", "Trial._trial_id"),
    ("optuna.trial", "FrozenTrial._trial_id"),
    ("optuna.storages", "RDBStorage._get_stale_trial_ids"),
    ("optuna.storages", "RDBStorage._create_new_trial"),
    ("optuna.storages", "RDBStorage._set_trial_param"),
    ("optuna.storages", "RDBStorage._get_trials"),
    ("optuna.storages", "RDBStorage._build_frozen_trial_from_trial_model"),
    ("optuna.storages._rdb.models", "TrialModel._datetime_start_utc"),
    ("optuna.storages._rdb.models", "TrialModel._datetime_complete_utc"),
    ("optuna.storages._rdb.models", "NOT_FOUND_MSG"),
    ("optuna.storages", "RDBStorage._get_best_trial_id"),
    ("optuna.storages._rdb.models", "TrialHeartbeatModel"),
    ("optuna.storages._rdb.models", "TrialModel"),
    ("optuna.storages._rdb.models", "SCHEMA_VERSION"),
    ("optuna.storages._rdb.models", "TrialUserAttributeModel"),
    ("optuna.storages._rdb.models", "TrialSystemAttributeModel"),
    ("optuna.storages._rdb.storage", "_create_scoped_session"),
    ("optuna.storages", "RDBStorage._set_trial_attr_without_commit"),
    ("optuna.storages._cached_storage", "_CachedStorage._backend"),
    ("optuna.trial", "Trial._cached_frozen_trial"),
    ("optuna.storages", "RDBStorage._fill_storage_url_template"),
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


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr`` for each of ``attrs``, in one transaction where the storage is
    sweep's (a trial records about 25 attrs: one commit each costs 2 to 4 ms of CPU). Optuna
    has no batch call; the trial's own cached copy (which ``trial.user_attrs`` reads) is
    updated as ``set_user_attr`` updates it."""
    backend = getattr(trial.storage, "_backend", trial.storage)  # inside Optuna's cache
    if not hasattr(backend, "set_trial_user_attrs"):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    backend.set_trial_user_attrs(trial_id(trial), attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)


def reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> int:
    """Seed every random state of ``sampler``, and of the samplers it holds (TPE's and GP's
    random sampler for their first trials), with ``seed``; returns how many it seeded.

    Why private: Optuna's public ``reseed_rng()`` draws a fresh random seed and takes none, and
    a sampler's seed is otherwise set only when it is made.
    """
    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    held = [v for v in vars(sampler).values() if isinstance(v, optuna.samplers.BaseSampler)]
    seeded = 0
    for each in (sampler, *held):
        for state in vars(each).values():
            if isinstance(state, LazyRandomState):
                state.rng.seed(seed)
                seeded += 1
    return seeded


def fill_url_template(url: str) -> str:
    """``url`` with Optuna's ``{SCHEMA_VERSION}`` placeholder filled in, as RDBStorage fills
    it, so that sweep names the same database the optuna CLI and the dashboard do."""
    import optuna

    return str(optuna.storages.RDBStorage._fill_storage_url_template(url))


def forget_artifact(storage: optuna.storages.BaseStorage, sid: int, artifact_id: str) -> None:
    """Unlist a study artifact whose file was removed. Optuna has no public call for it; this
    writes what optuna-dashboard's own "delete" writes (its meta set to null)."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX

    storage.set_study_system_attr(sid, ARTIFACTS_ATTR_PREFIX + artifact_id, json.dumps(None))


# Every storage call that reaches the database while a sweep runs: BaseStorage's public ones,
# and the private ones Optuna's _CachedStorage (what a Study wraps an RDBStorage in) calls on
# its backend, so those must be wrapped too. _create_new_trial is not idempotent: if a
# commit's reply is lost, the retry makes a second trial, RUNNING (with its first heartbeat,
# see _beat_on_claim) that no worker runs; it goes stale after the grace period and is failed.
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
        """Optuna's RDBStorage that rides out a lost connection, whose claims beat at once,
        and whose SQLite reads never wait for a writer.

        Published as ``sweep._optuna.SweepStorage``, so a study opened with it pickles as a
        stock RDBStorage's does.
        """

        def configure_engine(self) -> None:
            """Hook the claim heartbeat and, on SQLite, WAL journaling and transactions that
            take the write lock when they begin unless they only read. Re-applied when the
            storage is unpickled (RDBStorage rebuilds its engine and session there).

            SQLite's default deferred transactions read first and upgrade to a write lock
            later; when another process wrote in between, the upgrade fails at once with
            "database is locked", whatever the busy timeout. BEGIN IMMEDIATE waits instead.
            A read-only transaction begins deferred: under WAL it reads a snapshot, waits for
            no writer and blocks none.
            """
            self.claiming = False
            for event, hook in (
                ("before_flush", self._note_claims),
                ("before_commit", self._beat_on_claim),
                ("after_rollback", self._forget_claims),
            ):
                sqlalchemy.event.listen(self.scoped_session, event, hook)
            url = self.engine.url
            if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
                return  # an in-memory database lives in its one connection: leave it be
            with self.engine.connect() as conn:
                # WAL: readers (the dashboard, other workers) never block the writer.
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

            @sqlalchemy.event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN" if _reading.get() else "BEGIN IMMEDIATE")

            @sqlalchemy.event.listens_for(self.engine, "connect")
            def _connect(dbapi_conn: Any, _: Any) -> None:
                # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a killed or
                # crashed process loses nothing committed, and the database cannot be
                # corrupted; only a power cut can lose the last commits.
                dbapi_conn.execute("PRAGMA synchronous=NORMAL")

            self.engine.dispose()  # connections opened before this point had the defaults

        def _note_claims(self, session: Any, *_: Any) -> None:
            # A trial becomes RUNNING when claimed: a new one at its insert, an enqueued one
            # when its state changes. (Optuna also inserts every trial RUNNING first and then
            # sets its real state, so the state is checked again at commit.)
            if not self.claiming:
                return
            running = optuna.trial.TrialState.RUNNING
            claims = session.info.setdefault("sweep_claims", set())
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
            # Optuna's heartbeat thread beats only once the trial is claimed, and Optuna never
            # calls a RUNNING trial with no heartbeat row stale: a worker killed in between
            # would hold its trial forever. While this process claims (``claiming``), the
            # first beat is written in the claim's own transaction, so every trial a worker
            # claimed has one. Trials made elsewhere (ask-and-tell) are left as Optuna would.
            if not self.claiming:
                return
            session.flush()  # note what this commit would flush
            claims = session.info.pop("sweep_claims", set())
            with session.no_autoflush:
                for trial in claims:
                    if trial.state == optuna.trial.TrialState.RUNNING and not trial.heartbeats:
                        trial.heartbeats.append(models.TrialHeartbeatModel())

        def _forget_claims(self, session: Any, *_: Any) -> None:
            session.info.pop("sweep_claims", None)

        def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
            """Set several user attrs of a trial in one transaction, not one each."""
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.scoped_session, True) as session:
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial_id, key, value
                    )

        def _get_trials(
            self,
            study_id: int,
            states: Container[optuna.trial.TrialState] | None,
            included_trial_ids: set[int],
            trial_id_greater_than: int,
        ) -> list[optuna.trial.FrozenTrial]:
            """RDBStorage's read of trials (what ``get_all_trials`` and Optuna's cache call),
            in plain SQL queries instead of ORM loading: ~6x less CPU.

            Optuna's cache calls this on every ``get_trials`` and every ``ask`` and reads all
            unfinished trials again each time; a study with its grid points enqueued holds
            hundreds of WAITING ones, so on the claim path, under the study lock, the ORM's
            load cost ~30 ms per call against ~5 ms here. Optuna's storage tests run on this
            class (``tests/test_optuna_contract.py``).
            """
            trial = models.TrialModel
            where = [trial.study_id == study_id]
            if states is not None:
                where.append(trial.state.in_(list(states)))  # type: ignore[call-overload]
            included = {i for i in included_trial_ids if i <= trial_id_greater_than}
            wanted = list(where)
            if included and trial_id_greater_than > -1:
                wanted.append(
                    sqlalchemy.or_(
                        trial.trial_id.in_(included), trial.trial_id > trial_id_greater_than
                    )
                )
            elif trial_id_greater_than > -1:
                wanted.append(trial.trial_id > trial_id_greater_than)
            with self.engine.connect() as conn:
                studies = models.StudyModel
                found = conn.execute(
                    sqlalchemy.select(studies.study_id).where(studies.study_id == study_id)
                ).first()
                if found is None:
                    raise KeyError(models.NOT_FOUND_MSG)
                try:
                    return self._read_trials(conn, wanted)
                except sqlalchemy.exc.OperationalError:
                    # Too many ids for one IN on this database (SQLite's variable limit): as
                    # Optuna falls back, read the study's trials and keep those asked for.
                    conn.rollback()
                    return [
                        t
                        for t in self._read_trials(conn, where)
                        if t._trial_id in included or t._trial_id > trial_id_greater_than
                    ]

        def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
            """RDBStorage's, in plain SQL queries (see :meth:`_get_trials`); Optuna's cache
            calls it for every unfinished trial it is asked about, 3 times per trial run."""
            with self.engine.connect() as conn:
                found = self._read_trials(conn, [models.TrialModel.trial_id == trial_id])
            if not found:
                raise KeyError(models.NOT_FOUND_MSG)
            return found[0]

        def _read_trials(self, conn: Any, where: list[Any]) -> list[optuna.trial.FrozenTrial]:
            """The trials matching ``where``: one query for the trials, one per table of their
            params, values, attrs and intermediate values. The rows go through RDBStorage's
            own ``_build_frozen_trial_from_trial_model``, so the trials built are Optuna's."""
            trial = models.TrialModel
            rows = conn.execute(
                sqlalchemy.select(
                    trial.trial_id,
                    trial.number,
                    trial.state,
                    trial._datetime_start_utc.label("_datetime_start_utc"),
                    trial._datetime_complete_utc.label("_datetime_complete_utc"),
                )
                .where(*where)
                .order_by(trial.trial_id)
            ).all()
            if not rows:
                return []
            ids = sqlalchemy.select(trial.trial_id).where(*where).scalar_subquery()
            start, complete = vars(trial)["datetime_start"], vars(trial)["datetime_complete"]
            children: dict[str, dict[int, list[Any]]] = {}
            for field, model in (
                ("params", models.TrialParamModel),
                ("values", models.TrialValueModel),
                ("user_attributes", models.TrialUserAttributeModel),
                ("system_attributes", models.TrialSystemAttributeModel),
                ("intermediate_values", models.TrialIntermediateValueModel),
            ):
                by_trial = children[field] = {}
                query = sqlalchemy.select(*model.__table__.c).where(model.trial_id.in_(ids))
                for row in conn.execute(query):
                    by_trial.setdefault(row.trial_id, []).append(row)
            return [
                self._build_frozen_trial_from_trial_model(
                    types.SimpleNamespace(  # type: ignore[arg-type]  # what it reads of a TrialModel
                        trial_id=row.trial_id,
                        number=row.number,
                        state=row.state,
                        # Optuna's conversion of the stored UTC times.
                        datetime_start=start.fget(row),
                        datetime_complete=complete.fget(row),
                        **{f: rows.get(row.trial_id, []) for f, rows in children.items()},
                    )
                )
                for row in rows
            ]

        def get_budget_counts(
            self, sid: int, keys: tuple[str, ...], ignored: Callable[[Any], set[int]]
        ) -> tuple[int, int]:
            """(finished, running) trials of the study, leaving out those numbered in
            ``ignored(attrs)`` (called with each trial's number and its system attrs named
            ``keys``, for the trials that have any) and the RUNNING trials with no heartbeat:
            the trial loop's budget check, under the study lock.

            A trial with no heartbeat was asked by another Optuna client (``optuna ask``, a
            script), not claimed by a worker: it never goes stale, so a worker that counted
            it against the budget could wait for it without end.

            Optuna has no call that counts trials by state: ``get_trials`` through its cache
            reads every unfinished trial again, params and attrs, each time, and a study with
            its grid points enqueued holds hundreds of WAITING ones. The server counts here,
            and only the running trials and the ignored ones come back, whatever the study's
            length: narrow queries took 32 workers from 26 to 32 trials/s, and counting on
            the server a study of 10,000 finished trials from 0.30 to 0.65 of an empty one's
            rate (``benchmarks/claims.py``).
            """
            trial, attr = models.TrialModel, models.TrialSystemAttributeModel
            beat = models.TrialHeartbeatModel
            state = optuna.trial.TrialState
            with self.engine.connect() as conn:
                attrs = conn.execute(
                    sqlalchemy.select(trial.number, attr.key, attr.value_json)
                    .join(trial, attr.trial_id == trial.trial_id)
                    .where(trial.study_id == sid, attr.key.in_(keys))
                ).all()
                totals = conn.execute(
                    sqlalchemy.select(trial.state, sqlalchemy.func.count())
                    .where(trial.study_id == sid)
                    .group_by(trial.state)
                ).all()
                running = conn.execute(
                    sqlalchemy.select(trial.number, beat.trial_heartbeat_id)
                    .outerjoin(beat, beat.trial_id == trial.trial_id)
                    .where(trial.study_id == sid, trial.state == state.RUNNING)
                ).all()
                found: dict[int, dict[str, Any]] = {}
                for number, key, value in attrs:
                    found.setdefault(number, {})[key] = json.loads(value)
                left_out = ignored(sorted(found.items()))
                left_out |= {number for number, b in running if b is None}
                states = (
                    conn.execute(
                        sqlalchemy.select(trial.state).where(
                            trial.study_id == sid, trial.number.in_(sorted(left_out))
                        )
                    ).scalars().all()
                    if left_out
                    else []
                )  # fmt: skip
            counted = dict(totals)
            for s in states:
                counted[s] -= 1
            done = sum(counted.get(s, 0) for s in (state.COMPLETE, state.PRUNED, state.FAIL))
            return done, counted.get(state.RUNNING, 0)

        def __setstate__(self, state: dict[Any, Any]) -> None:
            super().__setstate__(state)
            self.configure_engine()

    SweepStorage.__module__, SweepStorage.__qualname__ = __name__, "SweepStorage"
    for name in (*_RETRIED, "set_trial_user_attrs", "get_budget_counts"):
        method = retrying(getattr(SweepStorage, name))
        if name.lstrip("_").startswith("get_"):
            method = _read_only(method)
        setattr(SweepStorage, name, method)
    setattr(SweepStorage, "record_heartbeat", _beat_quietly(SweepStorage.record_heartbeat))  # noqa: B010
    return SweepStorage


def _beat_quietly(beat: Callable[..., None]) -> Callable[..., None]:
    """A heartbeat runs in Optuna's thread, where an exception is printed as a traceback and
    stops the beats: once the storage is gone, the trial's own thread says so, once."""

    @functools.wraps(beat)
    def quietly(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(StorageUnavailable):
            beat(*args, **kwargs)

    return quietly


# Set while a storage call only reads: its SQLite transaction then begins deferred.
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar("sweep_reading", default=False)


def _read_only(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def reading(*args: Any, **kwargs: Any) -> Any:
        token = _reading.set(True)
        try:
            return method(*args, **kwargs)
        finally:
            _reading.reset(token)

    return reading


@contextlib.contextmanager
def claiming(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """While inside, a trial this process claims gets its first heartbeat in the claim's
    transaction (a no-op on a storage that is not sweep's)."""
    if not hasattr(storage, "claiming"):
        yield
        return
    storage.claiming = True
    try:
        yield
    finally:
        storage.claiming = False


def __getattr__(name: str) -> Any:
    if name == "SweepStorage":
        globals()[name] = cls = _storage_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
