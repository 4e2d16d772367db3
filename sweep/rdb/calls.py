"""Every storage call that reaches the database, retried while the connection is lost.

BaseStorage's public calls, and the private ones Optuna's ``_CachedStorage`` (what a Study
wraps an RDBStorage in) calls on its backend, so those are retried too
(``tests/test_storage.py`` checks that none is missed). Each runs inside
:func:`sweep.retry.retrying` (backoff, a window, no signal cutting it short); one that only
reads is marked so (:func:`sweep.rdb.sqlite.reading`): its SQLite transaction begins deferred.

``_create_new_trial`` is not idempotent: if a commit's reply is lost, the retry makes a second
trial, RUNNING with its first heartbeat (:mod:`sweep.rdb.claims`) that no worker runs; it
goes stale after the grace period and is failed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sweep.errors import StorageUnavailable
from sweep.rdb.fast import FastPath
from sweep.rdb.sqlite import read_only
from sweep.retry import retrying

__all__ = ["RetriedCalls"]

_T = TypeVar("_T")


def _read(method: Callable[..., _T]) -> Callable[..., _T]:
    return read_only(retrying(method))


def _beat_quietly(beat: Callable[..., None]) -> Callable[..., None]:
    """A heartbeat runs in Optuna's thread, where an exception is printed as a traceback and
    stops the beats: once the storage is gone, the trial's own thread says so, once."""

    @functools.wraps(beat)
    def quietly(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(StorageUnavailable):
            beat(*args, **kwargs)

    return quietly


class RetriedCalls(FastPath):
    """The storage's calls, each retried (:mod:`sweep.retry`); reads marked as reads."""

    @retrying
    def create_new_study(self, *args: Any, **kwargs: Any) -> Any:
        return super().create_new_study(*args, **kwargs)

    @_read
    def get_study_id_from_name(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_study_id_from_name(*args, **kwargs)

    @_read
    def get_study_name_from_id(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_study_name_from_id(*args, **kwargs)

    @_read
    def get_study_directions(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_study_directions(*args, **kwargs)

    @_read
    def get_study_user_attrs(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_study_user_attrs(*args, **kwargs)

    @_read
    def get_study_system_attrs(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_study_system_attrs(*args, **kwargs)

    @retrying
    def set_study_user_attr(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_study_user_attr(*args, **kwargs)

    @retrying
    def set_study_system_attr(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_study_system_attr(*args, **kwargs)

    @_read
    def get_all_studies(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_all_studies(*args, **kwargs)

    @retrying
    def create_new_trial(self, *args: Any, **kwargs: Any) -> Any:
        return super().create_new_trial(*args, **kwargs)

    @retrying
    def _create_new_trial(self, *args: Any, **kwargs: Any) -> Any:
        return super()._create_new_trial(*args, **kwargs)

    @retrying
    def set_trial_param(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_param(*args, **kwargs)

    @retrying
    def _set_trial_param(self, *args: Any, **kwargs: Any) -> Any:
        return super()._set_trial_param(*args, **kwargs)

    @_read
    def get_trial_param(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_trial_param(*args, **kwargs)

    @retrying
    def set_trial_state_values(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_state_values(*args, **kwargs)

    @retrying
    def set_trial_intermediate_value(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_intermediate_value(*args, **kwargs)

    @retrying
    def set_trial_user_attr(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_user_attr(*args, **kwargs)

    @retrying
    def set_trial_system_attr(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_system_attr(*args, **kwargs)

    @_read
    def get_trial_id_from_study_id_trial_number(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_trial_id_from_study_id_trial_number(*args, **kwargs)

    @_read
    def get_trial(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_trial(*args, **kwargs)

    @_read
    def get_all_trials(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_all_trials(*args, **kwargs)

    @_read
    def _get_trials(self, *args: Any, **kwargs: Any) -> Any:
        return super()._get_trials(*args, **kwargs)

    @_read
    def get_best_trial(self, *args: Any, **kwargs: Any) -> Any:
        return super().get_best_trial(*args, **kwargs)

    @_read
    def _get_best_trial_id(self, *args: Any, **kwargs: Any) -> Any:
        return super()._get_best_trial_id(*args, **kwargs)

    @_read
    def _get_stale_trial_ids(self, *args: Any, **kwargs: Any) -> Any:
        return super()._get_stale_trial_ids(*args, **kwargs)

    @retrying
    def set_trial_user_attrs(self, *args: Any, **kwargs: Any) -> Any:
        return super().set_trial_user_attrs(*args, **kwargs)

    @_read
    def count_states(self, *args: Any, **kwargs: Any) -> Any:
        return super().count_states(*args, **kwargs)

    @_beat_quietly
    @retrying
    def record_heartbeat(self, *args: Any, **kwargs: Any) -> None:
        super().record_heartbeat(*args, **kwargs)
