"""Every use of Optuna's private API, each with the reason no public API does the job.

Nothing else in sweep touches a private Optuna name but the storage subclass
(:mod:`sweep.rdb`), which overrides RDBStorage's private methods; its names are listed here
too. ``tests/test_optuna_contract.py``
checks that each name listed in :data:`PRIVATE_NAMES` still exists, so an Optuna release that
drops one fails loudly there rather than in a worker; ``pyproject.toml`` bounds Optuna to
the major version those tests pass on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OPTIMIZE_LOGGER",
    "PRIVATE_NAMES",
    "fill_url_template",
    "forget_artifact",
    "reseed",
    "set_user_attrs",
    "study_id",
    "trial_id",
]

# Optuna logs every failed trial with its traceback under this private module's logger; the
# trial loop reports each failure once itself, so it filters these lines out.
OPTIMIZE_LOGGER = "optuna.study._optimize"

# (module, attribute path): what this module and sweep.rdb rely on.
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
    sweep's (a trial records about 25 attrs, and each commit costs CPU and a round trip). Optuna
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
