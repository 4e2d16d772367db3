"""Storage URL -> Optuna storage, with engine settings that suit each backend.

* SQLite (the embedded default, ``sqlite:///sweep.db``): one file, no server. A busy timeout and
  WAL journaling let several processes on one machine share it without "database is locked".
* PostgreSQL (``postgresql+psycopg://user@host/db``): for several machines. Connections are
  pre-pinged (a restarted server costs a reconnect, not a crash), pools stay small (dozens of
  workers must fit in ``max_connections``) and Optuna's heartbeat marks dead workers' trials.

The URL is checked before anything is created, and every message hides the password.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_STORAGE", "check_url", "default_url", "open_storage", "redact"]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///sweep.db"
SQLITE_BUSY_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 5
# Overridable for tests and for clusters where 60 s of a dead worker's GPU matters.
HEARTBEAT_INTERVAL_S = int(os.environ.get("SWEEP_HEARTBEAT_INTERVAL", "10"))
HEARTBEAT_GRACE_S = int(os.environ.get("SWEEP_HEARTBEAT_GRACE", "60"))
MAX_RETRIES = 2


def default_url() -> str:
    """``$SWEEP_STORAGE``, else the embedded SQLite file in the working directory."""
    return os.environ.get("SWEEP_STORAGE") or DEFAULT_STORAGE


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<malformed storage URL>"


def _parse(url: str) -> Any:
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(
            "malformed storage URL; use sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host:5432/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy's bare postgresql:// means psycopg2; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(
            f"unsupported storage driver {parsed.drivername!r}; use sqlite:/// or "
            "postgresql+psycopg://"
        )
    try:
        parsed.get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError):
        raise UserError(
            f"unknown storage driver {parsed.drivername!r}; use sqlite:/// or postgresql+psycopg://"
        ) from None
    return parsed


def _engine_kwargs(parsed: Any) -> dict[str, Any]:
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 2,
        "pool_recycle": 300,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
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
    except sqlalchemy.exc.OperationalError as exc:
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
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
    return storage
