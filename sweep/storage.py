"""Storage URL -> Optuna storage, with engine settings that suit each backend.

* SQLite (the embedded default, ``sqlite:///sweep.db``): one file, no server, one machine.
  Every transaction begins ``IMMEDIATE`` (it takes the write lock up front, waiting up to the busy
  timeout), so several processes never meet SQLite's "database is locked" upgrade failure; WAL
  journaling lets readers (the dashboard) read while a worker writes.
* PostgreSQL (``postgresql+psycopg://user@host/db``): for several machines. Connections are
  pre-pinged (a restarted server costs a reconnect, not a crash), pools stay small (dozens of
  workers must fit in ``max_connections``).

Both get Optuna's heartbeat, so a dead worker's trial is failed and run again, and two fixes
Optuna lacks: a storage call that loses its connection (a restarted server) is retried for up
to :data:`STORAGE_RETRY_S` seconds instead of failing the trial, and a RUNNING trial that never
recorded a heartbeat (its worker died between claiming it and the first beat) goes stale too.

:func:`study_lock` serialises, across processes and hosts, the few steps that must not race:
creating a study with its planned trials, and checking the budget before claiming a trial.

The URL is checked before anything is created, and every message hides the password.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sweep.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_STORAGE",
    "check_url",
    "default_url",
    "open_storage",
    "peek_study_attrs",
    "redact",
    "storage_exists",
    "study_lock",
]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///sweep.db"
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 5


# Overridable for tests and for clusters where 60 s of a dead worker's GPU matters.
def _env_number(name: str, default: float) -> float:
    """``$name`` as a number; a bad value falls back here and is reported, as one line, by
    :func:`sweep.cli.check_environment` before anything runs."""
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


HEARTBEAT_INTERVAL_S = int(_env_number("SWEEP_HEARTBEAT_INTERVAL", 10))
HEARTBEAT_GRACE_S = int(_env_number("SWEEP_HEARTBEAT_GRACE", 60))
MAX_RETRIES = 2
# How long a storage call keeps retrying a lost connection (a PostgreSQL restart takes seconds).
STORAGE_RETRY_S = _env_number("SWEEP_STORAGE_RETRY", 120)

_T = TypeVar("_T")


def default_url() -> str:
    """``$SWEEP_STORAGE``, else the embedded SQLite file in the working directory."""
    return os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        return "<malformed storage URL>"


def _parse(url: str) -> Any:
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.port  # noqa: B018 - a port that is not a number fails here, not later
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        # Not the parser's message: it may quote the password.
        raise UserError(
            "malformed storage URL; use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's bare postgresql:// means psycopg2; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.drivername not in ("sqlite+pysqlite", "postgresql+psycopg"):
        kind = "unsupported" if parsed.get_backend_name() in ("sqlite", "postgresql") else "unknown"
        raise UserError(
            f"{kind} storage driver {parsed.drivername!r}; use sqlite:/// or postgresql+psycopg://"
        )
    if parsed.database and parsed.database.startswith("~"):
        parsed = parsed.set(database=str(Path(parsed.database).expanduser()))
    return parsed


def _engine_kwargs(parsed: Any) -> dict[str, Any]:
    if parsed.get_backend_name() == "sqlite":
        # isolation_level None: pysqlite emits no BEGIN of its own; _begin_immediate does.
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}}
    # A worker holds at most three connections at once: its trial, its heartbeat thread and,
    # for a moment, the study lock. 30 workers fit in PostgreSQL's default 100 connections.
    return {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 1,
        "pool_recycle": 300,
        "connect_args": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            # The server drops the session of a worker whose host vanished within a minute or
            # so (not TCP's default two hours), releasing any study lock it held.
            "options": "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=10 "
            "-c tcp_keepalives_count=3",
        },
    }


def _check_reachable(parsed: Any, kwargs: dict[str, Any]) -> None:
    """Fail with one clear line, before any table is written, if the server does not answer."""
    import sqlalchemy

    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise UserError(
                    f"storage {redact(str(parsed))}: folder {parent} does not exist; create it"
                )
        return
    engine = sqlalchemy.create_engine(parsed, **kwargs)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as exc:  # refused, timed out, bad option or database
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "no answer"
        if parsed.password:
            reason = reason.replace(parsed.password, "***")
        raise UserError(
            f"storage {redact(str(parsed))}: cannot connect to PostgreSQL at {where} "
            f"({reason}); start the server or fix the URL"
        ) from None
    finally:
        engine.dispose()


def check_url(url: str) -> None:
    """Check the URL's form and driver, and that its server answers; create nothing.

    Raises:
        UserError: naming what is wrong, the password hidden.
    """
    parsed = _parse(url)
    _check_reachable(parsed, _engine_kwargs(parsed))


def _is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection, or SQLite's lock wait running out: worth retrying.
    A bad query, a missing table or bad data is not."""
    import sqlalchemy

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sqlalchemy.exc.DBAPIError):
            if cause.connection_invalidated:
                return True
            kinds = type(cause.orig).__mro__
            if any(
                k.__module__.startswith("psycopg") and k.__name__ in _PSYCOPG_CONNECTION
                for k in kinds
            ):
                return True
            return "database is locked" in str(cause.orig)
        cause = cause.__cause__
    return False


# psycopg 3 raises these (or subclasses: AdminShutdown, ...) when the server goes away.
_PSYCOPG_CONNECTION = ("OperationalError", "InterfaceError")


_retrying_now = threading.local()


def _with_retries(call: Callable[[], _T], what: str) -> _T:
    """``call()``, retried with backoff while the storage's connection is lost.

    Calls nested in a retried call (``get_all_trials`` calls ``_get_trials``) are not retried
    again, so one outage costs at most :data:`STORAGE_RETRY_S`.
    """
    if getattr(_retrying_now, "active", False):
        return call()
    deadline = time.monotonic() + STORAGE_RETRY_S
    delay = 0.5
    _retrying_now.active = True
    try:
        while True:
            try:
                return call()
            except Exception as exc:
                if not _is_connection_error(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("storage unavailable (%s); retrying in %.1f s", what, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
    finally:
        _retrying_now.active = False


def _retrying(method: Callable[..., _T]) -> Callable[..., _T]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        return _with_retries(lambda: method(self, *args, **kwargs), method.__name__)

    return call


# Every storage call that reaches the database while a sweep runs: the public ones, and the
# private ones Optuna's _CachedStorage (what study._storage is) calls on its backend.
# _create_new_trial is not idempotent: if a commit's reply is lost, the retry makes a second
# trial, RUNNING with no heartbeat; the stale check below fails it.
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


def _storage_class() -> type[optuna.storages.RDBStorage]:
    import optuna

    class SweepStorage(optuna.storages.RDBStorage):
        """Optuna's RDBStorage that rides out a lost connection and a heartbeat never beaten."""

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = super()._get_stale_trial_ids(study_id)
            # Optuna skips RUNNING trials with no heartbeat row: a worker killed between
            # claiming a trial and its first beat would hold that trial RUNNING forever.
            # datetime_start is written with the writer's clock, as compared here.
            grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
            cutoff = datetime.now() - grace
            running = self.get_all_trials(
                study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
            beating = set(self._trials_with_heartbeat(study_id))
            for t in running:
                start = t.datetime_start
                if t._trial_id not in beating and start is not None and start < cutoff:
                    stale.append(t._trial_id)
            return sorted(set(stale))

        def _trials_with_heartbeat(self, study_id: int) -> list[int]:
            import sqlalchemy
            from optuna.storages._rdb import models

            beat, trial = models.TrialHeartbeatModel, models.TrialModel
            query = (
                sqlalchemy.select(beat.trial_id)
                .join(trial, trial.trial_id == beat.trial_id)
                .where(trial.study_id == study_id)
            )
            with self.engine.connect() as conn:
                return [row[0] for row in conn.execute(query)]

    for name in _RETRIED:
        setattr(SweepStorage, name, _retrying(getattr(SweepStorage, name)))
    return SweepStorage


def _begin_immediate(storage: optuna.storages.RDBStorage) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    SQLite's default deferred transactions read first and upgrade to a write lock later; when
    another process wrote in between, the upgrade fails at once with "database is locked",
    whatever the busy timeout. BEGIN IMMEDIATE waits (up to the timeout) instead.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _connect(dbapi_conn: Any, _: Any) -> None:
        # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a killed or crashed
        # process loses nothing committed, and the database cannot be corrupted; only a
        # power cut can lose the last commits. A trial writes some twenty times.
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    storage.engine.dispose()  # connections opened before this point had the default


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (creating tables if needed) the Optuna storage at ``url``.

    Raises:
        UserError: the URL is malformed, names an unknown driver, or the server does not
            answer; nothing is created in that case.
    """
    import optuna

    parsed = _parse(url)
    kwargs = _engine_kwargs(parsed)
    _check_reachable(parsed, kwargs)
    with _creation_lock(parsed), warnings.catch_warnings():
        # Workers that start together on a new database would all create its tables.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _storage_class()(
            parsed.render_as_string(hide_password=False),
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
            # A dead process's trial is run again with the same params, a bounded number of times.
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES
            ),
        )
    if parsed.get_backend_name() == "sqlite":
        with storage.engine.connect() as conn:
            # WAL: readers (the dashboard, other workers) never block the writer.
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        _begin_immediate(storage)
    return storage


def storage_exists(url: str) -> bool:
    """False only for a SQLite URL whose file does not exist (opening it would create it)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return bool(database) and database != ":memory:" and Path(database).expanduser().is_file()


def peek_study_attrs(url: str, name: str, *, system: bool = False) -> dict[str, Any] | None:
    """Study ``name``'s user attrs (its system attrs with ``system``), read without creating
    or changing anything; None if the storage or the study does not exist yet."""
    import optuna
    import sqlalchemy

    if not storage_exists(url):
        return None
    parsed = _parse(url)
    storage = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=_engine_kwargs(parsed),
                skip_compatibility_check=True,
                skip_table_creation=True,
            )
        study_id = storage.get_study_id_from_name(name)
        if system:
            return storage.get_study_system_attrs(study_id)
        return storage.get_study_user_attrs(study_id)
    except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
        return None  # no such study, or no tables yet (a new database)
    finally:
        if storage is not None:
            storage.engine.dispose()


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(engine: Any, key: int) -> Iterator[None]:
    import sqlalchemy

    def connect_and_lock() -> Any:
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except BaseException:
            conn.close()
            raise
        return conn

    with _with_retries(connect_and_lock, "study lock") as conn:
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31  # a signed 32-bit key


@contextlib.contextmanager
def _creation_lock(parsed: Any) -> Iterator[None]:
    """Held while Optuna creates (or checks) its tables."""
    import sqlalchemy

    if parsed.get_backend_name() == "postgresql":
        engine = sqlalchemy.create_engine(
            parsed,
            poolclass=sqlalchemy.pool.NullPool,
            connect_args=_engine_kwargs(parsed)["connect_args"],
        )
        try:
            with _advisory_lock(engine, _lock_key("sweep: tables")):
                yield
        finally:
            engine.dispose()
        return
    database = parsed.database or ""
    if not database or database == ":memory:":
        yield
        return
    with _file_lock(f"{database}.lock"):
        yield


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Hold a lock on ``study_name`` shared by every process that uses ``storage``.

    PostgreSQL: a session advisory lock (any host; released by the server if the holder
    dies). SQLite: ``flock`` on ``<database>.lock`` beside the file (one machine; released by
    the kernel if the holder dies).
    """
    # study._storage is Optuna's _CachedStorage: the database is behind it.
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is None:  # an in-memory storage: one process only
        yield
        return
    if engine.url.get_backend_name() == "postgresql":
        with _advisory_lock(engine, _lock_key(study_name)):
            yield
        return
    database = engine.url.database or ""
    if not database or database == ":memory:":
        yield  # one process only
        return
    with _file_lock(f"{database}.lock"):
        yield
