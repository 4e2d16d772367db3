"""SQLite's transaction policy: WAL journaling, and transactions that take the write lock when
they begin unless they only read.

SQLite's default deferred transactions read first and upgrade to a write lock later; when
another process wrote in between, the upgrade fails at once with "database is locked",
whatever the busy timeout. ``BEGIN IMMEDIATE`` waits instead. A transaction that only reads
(a storage call run inside :func:`reading`) begins deferred: under WAL it reads a snapshot,
waits for no writer and blocks none.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy

__all__ = ["configure_sqlite", "read_only", "reading"]

_T = TypeVar("_T")

# Set while a storage call only reads: its SQLite transaction then begins deferred.
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar("sweep_reading", default=False)


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """Inside, a SQLite transaction this thread begins is a reader's (deferred)."""
    token = _reading.set(True)
    try:
        yield
    finally:
        _reading.reset(token)


def read_only(method: Callable[..., _T]) -> Callable[..., _T]:
    """``method``, run :func:`reading`."""

    @functools.wraps(method)
    def read(*args: Any, **kwargs: Any) -> _T:
        with reading():
            return method(*args, **kwargs)

    return read


def configure_sqlite(engine: sqlalchemy.engine.Engine) -> None:
    """Give ``engine``, if it is a SQLite file's, the policy above (a no-op otherwise: an
    in-memory database lives in its one connection and is left be)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    with engine.connect() as conn:
        # WAL: readers (the dashboard, other workers) never block the writer.
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if _reading.get() else "BEGIN IMMEDIATE")

    @sqlalchemy.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _: Any) -> None:
        # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a killed or crashed
        # process loses nothing committed, and the database cannot be corrupted; only a power
        # cut can lose the last commits.
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # connections opened before this point had the defaults
