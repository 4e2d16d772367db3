"""Storage URL -> Optuna storage, with engine settings that suit each backend.

* SQLite (the embedded default, ``sqlite:///sweep.db``): one file, no server, one machine.
  Every transaction that writes begins ``IMMEDIATE`` (it takes the write lock up front, waiting
  up to the busy timeout), so several processes never meet SQLite's "database is locked" upgrade
  failure; one that only reads begins deferred, and WAL journaling lets it read while another
  process writes.
* PostgreSQL (``postgresql+psycopg://user@host/db``): for several machines. Connections are
  pre-pinged (a restarted server costs a reconnect, not a crash), pools stay small (dozens of
  workers fit in ``max_connections``), and everything works through a transaction-pooling
  PgBouncer, for hundreds: no session state outlives a transaction (the study lock is
  transaction-level, no statement is prepared on the server).

Both get Optuna's heartbeat, so a dead worker's trial is failed and run again, and two fixes
Optuna lacks: a storage call that loses its connection (a restarted server) is retried
(:mod:`sweep.retry`) instead of failing the trial, and a worker's claim writes the trial's
first heartbeat in its own transaction, so a worker that dies right after claiming cannot leave
its trial RUNNING forever. Trials made outside a worker (``study.ask()``, ``optuna ask``) are
left alone, as Optuna leaves them.

:func:`study_lock` serialises, across processes and hosts, the few steps that must not race:
creating a study with its planned trials, and checking the budget before claiming a trial.

The URL is checked before anything is created, and every message hides the password.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import _optuna
from sweep.errors import UserError
from sweep.retry import with_retries
from sweep.settings import current

if TYPE_CHECKING:
    import optuna

    from sweep.rdb import SweepStorage

__all__ = [
    "DEFAULT_STORAGE",
    "Held",
    "check_url",
    "default_url",
    "in_memory",
    "open_storage",
    "read_only",
    "redact",
    "storage_exists",
    "study_lock",
]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///sweep.db"
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 5
TCP_USER_TIMEOUT_MS = 50_000


MAX_RETRIES = 2
# A worker waiting for a study lock tries again within this long, doubling from the least to
# the most.
LOCK_POLL_MIN_S = 0.01
LOCK_POLL_MAX_S = 0.2


def default_url() -> str:
    """``$SWEEP_STORAGE``, else the embedded SQLite file in the working directory."""
    return current().storage or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        return "<malformed storage URL>"


def _parse(url: str) -> Any:
    import sqlalchemy

    if "{" in url:  # Optuna's {SCHEMA_VERSION} placeholder, filled in as Optuna fills it
        try:
            url = _optuna.fill_url_template(url)
        except (KeyError, ValueError, IndexError):
            raise UserError(
                "storage URL has a placeholder other than {SCHEMA_VERSION}; remove the braces"
            ) from None
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
        # isolation_level None: pysqlite emits no BEGIN of its own; the storage's engine
        # begins every transaction that writes IMMEDIATE (sweep.rdb.sqlite).
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}}
    # A worker holds at most three connections at once: its trial, its heartbeat thread and,
    # for a moment, the study lock. 30 workers fit in PostgreSQL's default 100 connections;
    # more go through a transaction-pooling pooler (docs/operations.md), where a connection
    # holds a server connection only inside a transaction.
    return {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 1,
        "pool_recycle": 300,
        "connect_args": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            # Both ends give up on the other within a minute or so, not TCP's defaults (two
            # hours idle; 15 minutes of retransmissions when a reply is unacknowledged): the
            # server drops the session of a worker whose host vanished, releasing any study
            # lock it held, and a worker cut off from the server notices.
            "keepalives_idle": 20,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            # No server-side prepared statements (psycopg prepares a query run five times):
            # behind a transaction-pooling pooler the next transaction may run on a server
            # connection that never saw the statement.
            "prepare_threshold": None,
            # A pooler passes these on or ignores them (PgBouncer: ignore_startup_parameters).
            "options": "-c tcp_keepalives_idle=20 -c tcp_keepalives_interval=10 "
            f"-c tcp_keepalives_count=3 -c tcp_user_timeout={TCP_USER_TIMEOUT_MS}",
        },
    }


_SQLITE_HEADER = b"SQLite format 3\x00"


def _sqlite_header(path: Path, shown: str) -> bytes:
    """The first bytes of ``path``, read through SQLite itself where it is a database.

    Never with ``open()`` on a database this process may hold open: closing any descriptor of
    a file drops every POSIX lock the process holds on it, SQLite's included, and a worker
    elsewhere could then write under a connection that thinks it holds a lock (a notebook
    that runs a second study after a first corrupted its database that way).
    SQLite's own open shares its descriptors and defers their close.
    """
    import sqlite3
    from urllib.parse import quote

    if not os.access(path, os.R_OK):
        raise UserError(f"storage {shown}: cannot read {path} (permission denied)")
    if not path.is_file():
        return b"not a regular file"  # a FIFO or a device: opening it could hang
    try:
        # immutable: read as a plain file, no -wal or -shm made beside it (a read-only
        # connection to a WAL database would leave both behind)
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?immutable=1", uri=True)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return b"not a database"
    return _SQLITE_HEADER


def _check_sqlite_file(path: Path, shown: str, *, write: bool = True) -> None:
    """A SQLite storage must be a database file (or none yet) in a folder this process can
    write: SQLite keeps its journal and lock files beside the database, readers included."""
    parent = path.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"storage {shown}: {parent} is a file, not a folder; fix the path")
    if not parent.is_dir():
        raise UserError(f"storage {shown}: folder {parent} does not exist; create it")
    if path.is_dir():
        raise UserError(f"storage {shown}: {path} is a folder, not a database file; name a file")
    if path.exists():
        head = _sqlite_header(path, shown)
        if head and head != _SQLITE_HEADER:
            raise UserError(
                f"storage {shown}: {path} is not a SQLite database; name the study's .db file, "
                "or a new file"
            )
        if write and not os.access(path, os.W_OK):  # root too: an immutable file, a read-only mount
            raise UserError(
                f"storage {shown}: {path} cannot be written (read-only); a study writes as it "
                "runs: make it writable, or copy it and name the copy"
            )
    try:  # the one reliable test, root included: make a file there (gone when closed)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise UserError(
            f"storage {shown}: folder {parent} cannot be written ({exc.strerror}); SQLite "
            "keeps its journal beside the database: use a writable folder"
        ) from None


def _check_reachable(parsed: Any, kwargs: dict[str, Any], *, write: bool = True) -> None:
    """Fail with one clear line, before any table is written, if the server does not answer."""
    import sqlalchemy

    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            _check_sqlite_file(Path(database).expanduser(), redact(str(parsed)), write=write)
        return
    engine = sqlalchemy.create_engine(parsed, **kwargs)
    try:
        with engine.connect() as conn:
            refusal = _may_not_write(conn) if write else None
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
    if refusal:
        raise UserError(f"storage {redact(str(parsed))}: {refusal}")


def _may_not_write(conn: Any) -> str | None:
    """Why this PostgreSQL session could not run a study, or None: a read-only database (or a
    standby), or a role that may not make Optuna's tables (PostgreSQL 15 and later give new
    roles no CREATE on the schema ``public``) or write them once made."""
    import sqlalchemy

    def ask(query: str) -> Any:
        return conn.execute(sqlalchemy.text(query)).scalar()

    if ask("SHOW transaction_read_only") == "on":
        return (
            "the database is read-only (a standby, or default_transaction_read_only); "
            "name the primary, or a database this role may write"
        )
    role, schema = ask("SELECT current_user"), ask("SELECT current_schema()")
    if schema is None:
        return f"role {role} has no schema to make tables in (search_path); set one"
    if ask("SELECT to_regclass('trials') IS NOT NULL"):
        if not ask("SELECT has_table_privilege('trials', 'INSERT, UPDATE, DELETE')"):
            return f"role {role} may not write Optuna's tables; GRANT it INSERT, UPDATE, DELETE"
    elif not ask("SELECT has_schema_privilege(current_schema(), 'CREATE')"):
        return (
            f"role {role} may not create tables in schema {schema} (PostgreSQL 15 and later "
            f"grant that to no role by default); GRANT CREATE ON SCHEMA {schema} TO {role}, "
            "or use a database the role owns"
        )
    return None


def in_memory(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database (``sqlite://``)."""
    parsed = _parse(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def check_url(url: str, *, write: bool = True) -> None:
    """Check the URL's form and driver, that its server answers, that its tables (if any)
    are of this Optuna's schema and, unless only to read, that a SQLite file can be written;
    create nothing.

    Raises:
        UserError: naming what is wrong, the password hidden.
    """
    parsed = _parse(url)
    _check_reachable(parsed, _engine_kwargs(parsed), write=write)
    _check_schema(url, redact(str(parsed)))


def _check_schema(url: str, shown: str) -> None:
    """Refuse tables that another Optuna version made: Optuna would raise when it opens them,
    after the lock file and the artifact folder were made."""
    import sqlalchemy

    with read_only(url) as found:
        if found is None:
            return
        try:
            _check_version(found, shown)
        except (AssertionError, sqlalchemy.exc.SQLAlchemyError):
            return  # no version stamped yet: a database whose tables are being made


def _check_version(storage: optuna.storages.RDBStorage, shown: str) -> None:
    """Refuse a storage whose tables are of another Optuna schema than this Optuna's."""
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    if current in storage.get_all_versions():
        fix = "upgrade it with `optuna storage upgrade --storage URL`, or use another storage"
    else:
        fix = "a newer Optuna made it: install that version, or use another storage"
    raise UserError(
        f"storage {shown}: its tables are of Optuna's schema {current}, not this Optuna's "
        f"{head}; {fix}"
    )


def open_storage(url: str, *, check: bool = True, create: bool = True) -> SweepStorage:
    """Open (creating tables if needed) the Optuna storage at ``url``; ``check=False`` when
    :func:`check_url` has just checked it. ``create=False`` for a storage known to hold its
    tables (a study was found in it): nothing is created, not even SQLite's lock file, so a
    reader that refuses (report, export, the dashboard) leaves the folder as it was.

    Raises:
        UserError: the URL is malformed, names an unknown driver, or the server does not
            answer; nothing is created in that case.
    """
    import optuna

    from sweep.rdb import SweepStorage

    parsed = _parse(url)
    kwargs = _engine_kwargs(parsed)
    if check:
        _check_reachable(parsed, kwargs)
        _check_schema(url, redact(str(parsed)))
    # Workers that start together on a new database would all create its tables.
    creating = _creation_lock(parsed) if create else contextlib.nullcontext()
    with creating, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = SweepStorage(
            parsed.render_as_string(hide_password=False),
            engine_kwargs=kwargs,
            skip_table_creation=not create,
            heartbeat_interval=current().heartbeat_interval_s,
            grace_period=current().heartbeat_grace_s,
            # A dead process's trial is run again with the same params, a bounded number of times.
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES
            ),
            # Checked below instead: Optuna's check reads the version on a second connection
            # while its session holds a first, and behind a pooler with few server connections
            # workers that each hold one and wait for another would wait for each other.
            skip_compatibility_check=True,
        )
    try:
        _check_version(storage, redact(str(parsed)))
    except UserError:
        storage.engine.dispose()
        raise
    storage.configure_engine()
    return storage


def storage_exists(url: str) -> bool:
    """False only for a SQLite URL whose file does not exist (opening it would create it)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return bool(database) and database != ":memory:" and Path(database).expanduser().is_file()


@contextlib.contextmanager
def read_only(url: str) -> Iterator[optuna.storages.RDBStorage | None]:
    """The storage at ``url`` opened to read: no table is created, nothing is written; None
    if it does not exist yet (a SQLite file that is not there)."""
    import optuna
    import sqlalchemy

    if not storage_exists(url):
        yield None
        return
    parsed = _parse(url)
    # Under the lock the creators hold: opening an RDBStorage stamps Alembic's version table if
    # it is still empty, which would race a worker making the tables (seen on SQLite: six
    # workers starting together on a new file, "UNIQUE constraint failed: alembic_version").
    # On SQLite only where a creator made the lock file: a reader creates nothing.
    database = parsed.database or ""
    shared = parsed.get_backend_name() == "postgresql" or Path(_lock_file(database)).exists()
    creating = _creation_lock(parsed) if shared else None
    try:
        with creating or contextlib.nullcontext(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                engine_kwargs=_engine_kwargs(parsed),
                skip_compatibility_check=True,
                skip_table_creation=True,
            )
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
        yield None  # a database with no tables yet
        return
    try:
        yield storage
    finally:
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


class Held:
    """A held study lock. ``lost`` turns true, once it is released, if the server dropped
    the session that held it meanwhile (a restart): others may have taken it in between."""

    lost = False


@contextlib.contextmanager
def _advisory_lock(engine: Any, key: int) -> Iterator[Held]:
    """A transaction-level advisory lock on ``key``, held until the block ends.

    Correct behind a transaction-pooling pooler (PgBouncer): the lock lives in one transaction,
    so on one server connection, and goes with it however the transaction ends. A waiter holds
    no server connection: it tries for the lock, and between tries has no transaction open;
    otherwise a pooler with fewer server connections than waiters would give them all to
    waiters while the holder's own queries wait for one.
    """
    import sqlalchemy

    try_lock = sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)")

    def connect_and_lock() -> Any:
        conn = engine.connect()
        try:
            pause = LOCK_POLL_MIN_S
            while not conn.execute(try_lock, {"k": key}).scalar():
                conn.rollback()  # no transaction, so no server connection, while it sleeps
                time.sleep(random.uniform(0, pause))
                pause = min(pause * 2, LOCK_POLL_MAX_S)
        except BaseException:
            conn.close()
            raise
        return conn

    held = Held()
    with with_retries(connect_and_lock, "study lock") as conn:
        try:
            yield held
        finally:
            # A checked-out connection is never silently reconnected: if this transaction's
            # session is gone (a restarted server), so is the lock.
            try:
                conn.execute(sqlalchemy.text("SELECT 1"))
                conn.rollback()
            except sqlalchemy.exc.DBAPIError:
                held.lost = True


def _lock_file(database: str) -> str:
    """Where the creators of a SQLite storage, and its study locks, hold their file lock."""
    return f"{database}.lock"


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
    with _file_lock(_lock_file(database)):
        yield


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[Held]:
    """Hold a lock on ``study_name`` shared by every process that uses ``storage``.

    PostgreSQL: a transaction-level advisory lock (any host, directly or through a
    transaction-pooling pooler; released by the server if the holder dies, and lost if the
    server restarts: see :attr:`Held.lost`). SQLite: ``flock`` on
    ``<database>.lock`` beside the file (one machine; released by the kernel if the holder
    dies; never lost).
    """
    engine = getattr(storage, "engine", None)
    database = "" if engine is None else engine.url.database or ""
    if engine is not None and engine.url.get_backend_name() == "postgresql":
        with _advisory_lock(engine, _lock_key(study_name)) as held:
            yield held
    elif not database or database == ":memory:":
        yield Held()  # an in-memory storage: one process only
    else:
        with _file_lock(_lock_file(database)):
            yield Held()
