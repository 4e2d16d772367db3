"""Storage calls that ride out a lost connection: the one place where retries live.

A PostgreSQL restart, a failover or SQLite's lock wait running out makes a storage call fail
with a connection error. Such a call is retried with backoff for up to
``$SWEEP_STORAGE_RETRY`` seconds (:mod:`sweep.settings`); after that it raises
:class:`~sweep.errors.StorageUnavailable`
and the process stops, its completed trials already stored. A bad query, a missing table or
bad data is not retried.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sweep.errors import StorageUnavailable
from sweep.settings import current
from sweep.stop import critical

__all__ = ["is_connection_error", "retrying", "with_retries"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


# psycopg 3 raises these (or subclasses: AdminShutdown, ...) when the server goes away.
_PSYCOPG_CONNECTION = ("OperationalError", "InterfaceError")


# What a database says when its disk is full (SQLite, and PostgreSQL's SQLSTATE class 53100);
# a process file-size limit shows as SQLite's I/O error.
_DISK_FULL = ("database or disk is full", "disk I/O error")


def write_refused(exc: BaseException) -> str | None:
    """The database's words when it could not write for want of disk, else None."""
    import sqlalchemy

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sqlalchemy.exc.DBAPIError):
            said = str(cause.orig).strip().splitlines()[0] if cause.orig else ""
            if getattr(cause.orig, "sqlstate", None) == "53100" or any(
                words in said for words in _DISK_FULL
            ):
                return said
        cause = cause.__cause__
    return None


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection, or SQLite's lock wait running out: worth retrying."""
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


_retrying_now = threading.local()
# Set once a call has waited out the window: the storage is gone for this process, and the
# calls that follow (a failed trial's tell, the heartbeat, the requeue) give up at once
# instead of each waiting the window again. Cleared by the next call that succeeds.
_lost = threading.Event()


def with_retries(call: Callable[[], _T], what: str) -> _T:
    """``call()``, retried with backoff while the storage's connection is lost; once one
    call of this process has waited out the window, the next ones give up at once.

    Calls nested in a retried call (``get_all_trials`` calls ``_get_trials``) are not retried
    again, so one outage costs at most the window.

    Raises:
        StorageUnavailable: the connection did not come back within the window.
    """
    if getattr(_retrying_now, "active", False):
        return call()
    window = current().storage_retry_s
    deadline = time.monotonic() + window
    delay = 0.5
    _retrying_now.active = True
    try:
        while True:
            try:
                result = call()
            except Exception as exc:
                if refused := write_refused(exc):  # waiting would not free the disk
                    raise StorageUnavailable(
                        f"the storage could not write ({refused}; {what}): free space on its "
                        "disk; completed trials are kept: run the same command then"
                    ) from exc
                if not is_connection_error(exc):
                    raise
                if _lost.is_set() or time.monotonic() + delay > deadline:
                    _lost.set()
                    raise StorageUnavailable(
                        f"the storage did not answer for {window} s ({what}); "
                        "completed trials are kept: run the same command once it is back"
                    ) from exc
                log.warning("storage unavailable (%s); retrying in %.1f s", what, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)
            else:
                _lost.clear()
                return result
    finally:
        _retrying_now.active = False


def retrying(method: Callable[..., _T]) -> Callable[..., _T]:
    """``method`` with :func:`with_retries` around every call, which no signal cuts."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        with critical():  # a Ctrl-C waits for the call to end, and is raised then
            return with_retries(lambda: method(self, *args, **kwargs), method.__name__)

    return call
