"""The Optuna study of a study file: its sampler, pruner, budget and planned trials.

Opening a study is safe from any number of processes at once (the launcher, its workers,
docker-compose workers on other hosts): creating it, checking that it was run on the same
data, and enqueueing the baseline and grid points happen under :func:`sweep.storage.study_lock`,
so each planned trial is enqueued exactly once.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING, Any

from sweep.config import StudySpec, loads_study
from sweep.errors import UserError
from sweep.storage import peek_study_attrs, redact, study_lock

if TYPE_CHECKING:
    import optuna

__all__ = ["SPEC_ATTR", "budget", "check_resumable", "max_epochs", "open_study", "stored_spec"]

log = logging.getLogger(__name__)

SPEC_ATTR = "sweep:study_file"  # study system attr: the study file's name and text


def budget(spec: StudySpec, requested: int | None, n_planned: int) -> int:
    """The study's total trial budget: ``--n-trials``, else the file's, else the grid's size.

    Raises:
        UserError: a sampled search has no budget anywhere.
    """
    if spec.sampler.name == "grid":
        size = n_planned  # every grid point once, and the baseline if it is not one of them
        if requested is not None and requested > size:
            log.warning("the grid has %d points; running %d trials, not %d", size, size, requested)
        return min(requested or spec.n_trials or size, size)
    if requested is not None:
        return requested
    if spec.n_trials is not None:
        return spec.n_trials
    if not spec.varying:
        return n_planned
    raise UserError(
        f"{spec.source}: n_trials is missing; a {spec.sampler.name} search needs a budget "
        "(add n_trials = N to the file or pass --n-trials N)"
    )


def max_epochs(spec: StudySpec, cap: int | None) -> int:
    """The most epochs any trial of the study runs (the pruner's maximum resource)."""
    d = spec.dimension("epochs")
    top = int(d.high) if d.kind == "range" else max(d.choices)
    top = max(top, spec.baseline.epochs)
    return min(top, cap) if cap else top


def _sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    name = spec.sampler.name
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group: the dropout rates exist only for the dropout family (a conditional space).
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=spec.sampler.n_startup_trials,
                multivariate=True,
                group=True,
            )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # grid: every point is enqueued, the sampler is never asked; random: as it says.
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(spec: StudySpec, top_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=top_epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _sampler_seed(seed: int, worker: int | None) -> int:
    if worker is None:
        return seed
    return (seed + 7919 * (os.getpid() if worker < 0 else worker + 1)) % 2**32


def _refuse_other_data(before: Any, fingerprint: dict[str, Any], name: str, url: str) -> None:
    if before is not None and before != fingerprint:
        raise UserError(
            f"study {name!r} in {redact(url)} was run with {before}, not {fingerprint}; "
            "pass --study-name NEW to start a separate study"
        )


def check_resumable(url: str, name: str, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Refuse, before anything is written, to resume a study that was run on other data.

    Returns:
        The study's user attrs (empty if it does not exist yet).
    """
    attrs = peek_study_attrs(url, name) or {}
    _refuse_other_data(attrs.get("fingerprint"), fingerprint, name, url)
    return attrs


def _enqueue_plan(study: optuna.Study, spec: StudySpec, budget: int) -> int:
    """Enqueue the baseline and grid points that the study does not hold yet, as many as the
    budget can run: an enqueued point nobody will claim would sit ahead of every retry."""
    from optuna.trial import TrialState

    from sweep.space import optuna_params, planned, point_key

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    have = {t.user_attrs.get("point") for t in study.get_trials(deepcopy=False, states=live)}
    added = 0
    for params in planned(spec)[:budget]:
        key = point_key(params)
        if key in have:
            continue
        study.enqueue_trial(
            optuna_params(spec, params),
            user_attrs={"point": key, "is_baseline": params == spec.baseline},
        )
        added += 1
    return added


def open_study(
    spec: StudySpec,
    *,
    storage: optuna.storages.RDBStorage,
    name: str,
    fingerprint: dict[str, Any],
    budget: int,
    max_epochs: int,
    worker: int | None = None,
) -> optuna.Study:
    """Create or load study ``name``, record its budget and enqueue its planned trials.

    Args:
        fingerprint: What the trials are scored on (dataset, seed, subset, split); a study
            run on other data is refused.
        budget: The study's total trial budget, recorded for workers started without one.
        max_epochs: The pruner's maximum resource.
        worker: This worker's index, which offsets the sampler's seed so that workers do not
            all draw the same parameters; None for a lone worker (the study's own seed, so a
            one-worker run is reproducible), or -1 for a worker started by hand (its pid).

    Raises:
        UserError: the study exists and was run on other data.
    """
    import optuna

    with study_lock(storage, name):
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:  # checked again: another process may have just made it
            url = storage.engine.url.render_as_string(hide_password=False)
            _refuse_other_data(existing.user_attrs.get("fingerprint"), fingerprint, name, url)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=_sampler(spec, _sampler_seed(spec.seed, worker)),
            pruner=_pruner(spec, max_epochs),
            load_if_exists=True,
        )
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("description", spec.description)
        study.set_user_attr("budget", budget)
        # The study file travels with the study: verify and report need no file on their host.
        storage.set_study_system_attr(
            study._study_id, SPEC_ATTR, {"name": spec.name, "text": spec.text}
        )
        added = _enqueue_plan(study, spec, budget)
    if added:
        log.info("enqueued %d planned trials (baseline and grid points)", added)
    return study


def stored_spec(study: optuna.Study) -> StudySpec:
    """The study file that ``study`` was last opened with, as kept in its storage.

    Raises:
        UserError: the study was not made by ``sweep.launch``.
    """
    saved = study._storage.get_study_system_attrs(study._study_id).get(SPEC_ATTR)
    if not saved:
        raise UserError(
            f"study {study.study_name!r} was not created by sweep.launch (it has no study file "
            "recorded); run it with python -m sweep.launch first"
        )
    return loads_study(saved["text"], name=saved["name"], source=f"study {study.study_name!r}")
