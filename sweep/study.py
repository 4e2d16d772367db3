"""The Optuna study of a run: its sampler, pruner, planned trials and what it stores.

Opening a study is safe from any number of processes at once (the launcher, its workers,
docker-compose workers on other hosts): creating it, checking that it was run on the same
data, and enqueueing the baseline and grid points happen under :func:`sweep.storage.study_lock`,
so each planned trial is enqueued exactly once.

The creator stores the run in the study: the study file's text, the data it is scored on
(``fingerprint``), the budget and the epoch cap. Every other process reads them back with
:func:`stored_run`, so a worker on another host needs no study file. This module is also the
only one that reads or writes the study's own attrs (trial attrs: :mod:`sweep.records`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import _optuna, records
from sweep.config import Params, PrunerSpec, StudySpec, is_builtin_family
from sweep.errors import UserError
from sweep.records import TrialRecord
from sweep.run import SPEC_ATTR, Overrides, RunOptions, Stored, resolve, spec_from_stored
from sweep.space import incompatible_dimensions, optuna_params, planned, point_key
from sweep.storage import read_only, redact, study_lock

if TYPE_CHECKING:
    import optuna

    from sweep.data import Splits

__all__ = [
    "KeptModel",
    "Stored",
    "check_against",
    "check_resumable",
    "description",
    "kept_models",
    "open_study",
    "peek",
    "set_kept_models",
    "set_verification",
    "stored_run",
    "verification",
]

log = logging.getLogger(__name__)

HISTORY_ATTR = "sweep:replaced_study_files"  # system attr: files replaced, oldest first
KEPT_ATTR = "sweep:kept_models"  # system attr: [{"trial", "value", "artifact_id"}], best first
DATA_ATTR = "data"  # user attr: the data's input shape and class names
VERIFICATION_ATTR = "verification"  # user attr: sweep verify's result, in Markdown


def peek(url: str, name: str) -> Stored | None:
    """What study ``name`` stores, read without writing; None if there is no such study (or
    no tables yet: a new database)."""
    import optuna
    import sqlalchemy

    with read_only(url) as storage:
        if storage is None:
            return None
        try:
            sid = storage.get_study_id_from_name(name)
            user, system = storage.get_study_user_attrs(sid), storage.get_study_system_attrs(sid)
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):
            return None
    return Stored.from_attrs(user, system)


def _same_data(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two fingerprints name the same data: equal, or an own dataset of the same
    content hash found at another path (another checkout, another mount)."""
    if before == now:
        return True
    if not before.get("data_sha256") or before.get("data_sha256") != now.get("data_sha256"):
        return False
    return {k: v for k, v in before.items() if k != "dataset"} == {
        k: v for k, v in now.items() if k != "dataset"
    }


def _refuse_other_data(before: Any, fingerprint: dict[str, Any], name: str, url: str) -> None:
    if isinstance(before, dict) and _same_data(before, fingerprint):
        return
    if before is not None and before != fingerprint:
        raise UserError(
            f"study {name!r} in {redact(url)} was run with {before}, not {fingerprint}; "
            "pass --study-name NEW for a new study, or the same options to resume it"
        )


_TRIAL_SHAPING = ("space", "baseline", "sampler", "pruner", "augmentation")


def _refuse_other_file(stored: Stored, run: RunOptions) -> None:
    """A study resumed with another study file: refused unless ``run.replace_file``, and even
    then when the change cannot share a study (another baseline, a dimension Optuna cannot
    change)."""
    if stored.file_text is None or stored.file_name is None:
        return
    before = spec_from_stored(
        stored.file_text, name=stored.file_name, study=run.study_name, fingerprint={}
    )
    changed = [k for k in _TRIAL_SHAPING if getattr(before, k) != getattr(run.spec, k)]
    if not changed:
        return
    where = f"study {run.study_name!r} in {redact(run.url)}"
    if not run.replace_file:
        raise UserError(
            f"{where} was created from another study file (its {', '.join(changed)} differ); "
            "pass --study-name NEW for a new study, or --replace-study-file to go on with this "
            "file (the old one is kept in the study)"
        )
    if "baseline" in changed:
        raise UserError(
            f"{where} has another baseline, and every trial is measured against it; "
            "pass --study-name NEW for a study with this one"
        )
    if clash := incompatible_dimensions(before, run.spec):
        raise UserError(
            f"{where}: space.{clash} changed in a way one Optuna study cannot hold (another "
            "kind, scale or list of values); pass --study-name NEW"
        )


def check_resumable(run: RunOptions) -> None:
    """Check ``run`` against what its study stores, if it exists; writes nothing.

    Raises:
        UserError: see :func:`check_against`.
    """
    check_against(run, peek(run.url, run.study_name))


def check_against(run: RunOptions, stored: Stored | None) -> None:
    """Check ``run`` against ``stored``, what its study holds (None: no such study).

    Raises:
        UserError: the study exists and was run on other data, or from another study file
            (unless ``run.replace_file`` and the change is one the study can hold).
    """
    if stored is not None:
        _refuse_other_data(stored.fingerprint, run.fingerprint(), run.study_name, run.url)
        _refuse_other_file(stored, run)


def stored_run(
    url: str,
    name: str,
    *,
    data_dir: Path | None,
    artifacts: Path,
    budget: int | None = None,
    max_epochs: int | None = None,
    stored: Stored | None = None,
    backend: str | None = None,
) -> RunOptions:
    """The run study ``name`` was created for, as its storage holds it (``stored``, if the
    caller has just read it).

    Raises:
        UserError: no such study, or one that sweep did not create.
    """
    stored = stored or peek(url, name)
    if stored is None:
        raise UserError(
            f"no study {name!r} in {redact(url)}; run sweep launch --study {name} first, "
            "or pass --storage URL"
        )
    if stored.file_text is None or stored.file_name is None:
        raise UserError(
            f"study {name!r} in {redact(url)} was not created by sweep launch (it has no "
            "study file recorded); run it with sweep launch first"
        )
    said = Overrides(
        n_trials=budget,
        max_epochs=max_epochs,
        backend=backend,
        data_dir=data_dir,
        artifacts=artifacts,
    )
    return resolve(stored, url=url, name=name, said=said)


# --------------------------------------------------------------------------- opening


def _sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study file's sampler, reseeded for each trial from the study's sampling seed
    (:mod:`sweep.sampling`): every worker draws other params, reproducibly."""
    from sweep.sampling import TrialSeeded

    return TrialSeeded(_base_sampler(spec, spec.sampling_seed), spec.sampling_seed)


def _base_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    name = spec.sampler.name
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed,
                # Optuna counts every finished trial here, the planned baseline included.
                n_startup_trials=spec.sampler.n_startup_trials,
                # One model of the parameters a trial draws together: a family comes with the
                # learning rate, batch size and epochs it did well with. group: the dropout
                # rates exist only for the dropout family (a conditional space).
                multivariate=True,
                group=True,
                # Workers sharing a study: a running trial counts as a bad one, so another
                # worker does not draw the same point meanwhile. Said here, not left to
                # Optuna's default, which was False before Optuna 5.
                constant_liar=True,
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
        _warn_if_trials_skip_rungs(spec, _hyperband_rungs(p, top_epochs))
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=top_epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _hyperband_rungs(pruner: PrunerSpec, top_epochs: int) -> list[int]:
    """The epochs after which Hyperband can prune a trial, in any of its brackets:
    ``min_resource`` times each power of ``reduction_factor``, up to ``top_epochs``
    (1, 3, 9 for 1, 3 and 15)."""
    rungs, epoch = [], pruner.min_resource
    while epoch <= top_epochs:
        rungs.append(epoch)
        epoch *= pruner.reduction_factor
    return rungs


def _warn_if_trials_skip_rungs(spec: StudySpec, rungs: list[int]) -> None:
    """Warn when some trials can finish before the last rung that longer ones must pass.

    Optuna's TPE ranks every completed trial above every pruned one. A trial that asks for
    fewer epochs than the last rung completes without facing it, while a longer one that
    was as good at that epoch may be pruned there, so the sampler learns to ask for short
    runs, however well the longer ones were doing.
    """
    epochs = spec.dimension("epochs")
    if spec.sampler.name != "tpe" or epochs.kind == "fixed" or not rungs:
        return
    shortest = int(epochs.low if epochs.kind == "range" else min(epochs.choices))
    if shortest < rungs[-1]:
        log.warning(
            "space.epochs lets a trial stop after %d epochs, before Hyperband's last rung at "
            "epoch %d: such trials complete without facing it, and TPE ranks them above the "
            "longer ones it prunes there; start space.epochs at %d, or lower the rungs "
            "(pruner.min_resource)",
            shortest,
            rungs[-1],
            rungs[-1],
        )


def _enqueue_plan(study: optuna.Study, spec: StudySpec, budget: int) -> int:
    """Enqueue the baseline and grid points that the study does not hold yet, as many as the
    budget can run: an enqueued point nobody will claim would sit ahead of every retry."""
    from optuna.trial import TrialState

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    have = {records.read(t).point for t in study.get_trials(deepcopy=False, states=live)}
    added = 0
    for params in planned(spec)[:budget]:
        if point_key(params) in have:
            continue
        study.enqueue_trial(
            optuna_params(spec, params),
            user_attrs=records.planned_attrs(params, is_baseline=params == spec.baseline),
        )
        added += 1
    return added


def open_study(
    run: RunOptions,
    *,
    storage: optuna.storages.RDBStorage,
    create: bool = True,
) -> optuna.Study:
    """Create or load the run's study, store the run in it and enqueue its planned trials.

    Args:
        run: The run; the storage must be the one its URL names.
        storage: The opened storage.
        create: Store the run and enqueue the plan (the creator's job); False only loads.

    Raises:
        UserError: the study exists and was run on other data.
    """
    import optuna

    spec = run.spec
    name = run.study_name
    with study_lock(storage, name):
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:  # checked again: another process may have just made it
            before = existing.user_attrs.get("fingerprint")
            _refuse_other_data(before, run.fingerprint(), name, run.url)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=_sampler(spec),
            pruner=_pruner(spec, run.top_epochs),
            load_if_exists=True,
        )
        added = 0
        if create or existing is None:
            for key, value in (
                ("fingerprint", run.fingerprint()),
                ("description", spec.description),
                ("budget", run.budget),
                ("max_epochs", run.max_epochs),
            ):
                study.set_user_attr(key, value)
            # The study file travels with the study: workers, verify and report need no file.
            sid = _optuna.study_id(study)
            system = storage.get_study_system_attrs(sid)
            saved = system.get(SPEC_ATTR)
            if saved and saved.get("text") != spec.text:  # --replace-study-file: keep the old one
                history = [*system.get(HISTORY_ATTR, []), saved]
                storage.set_study_system_attr(sid, HISTORY_ATTR, history)
                log.warning("study %r goes on with study file %s", name, spec.source or spec.name)
            saved = {"name": spec.name, "text": spec.text}
            if run.code_dir is not None:
                saved["folder"] = str(run.code_dir)
            storage.set_study_system_attr(sid, SPEC_ATTR, saved)
            added = _enqueue_plan(study, spec, run.budget)
    if added:
        log.info("enqueued %d planned trials (baseline and grid points)", added)
    # Optuna's cache reads every trial of the study on its first read, and a worker's first
    # claim reads under the study lock: read them now, outside it, so that no worker waits out
    # another's first read (``python -m benchmarks --only long_study`` measures a long study).
    study.get_trials(deepcopy=False)
    return study


# --------------------------------------------------------------------------- study attrs


def set_data_info(study: optuna.Study, splits: Splits) -> None:
    """Store what the models, the report and an exported model need to know of the data."""
    study.set_user_attr(
        DATA_ATTR,
        {"input_shape": list(splits.input_shape), "class_names": list(splits.class_names)},
    )


def data_info(study: optuna.Study) -> dict[str, Any]:
    """The data's ``input_shape`` and ``class_names``, as :func:`set_data_info` stored them
    (empty for a study made before they were stored)."""
    info = study.user_attrs.get(DATA_ATTR)
    return info if isinstance(info, dict) else {}


def description(study: optuna.Study) -> str:
    return str(study.user_attrs.get("description", ""))


def verification(study: optuna.Study) -> str:
    """The Markdown table ``sweep verify`` attached, or ""."""
    return str(study.user_attrs.get(VERIFICATION_ATTR) or "")


def set_verification(study: optuna.Study, markdown: str) -> None:
    study.set_user_attr(VERIFICATION_ATTR, markdown)


def reusable_baseline(
    storage: optuna.storages.BaseStorage,
    run: RunOptions,
    params: Params,
    seed: int,
    platform: str,
) -> tuple[str, TrialRecord] | None:
    """A completed baseline of another study in ``storage`` that this run's baseline would
    repeat to the last digit: trained on the same data (dataset, seed, subset, split), with
    the same params and training seed, augmentation and score, on the same ``platform``
    (:func:`sweep.training.platform`). None if there is none.

    Training is deterministic for a given seed on one platform (software, processor, threads),
    so reusing it saves the epochs and changes no number; on another platform the same seed
    gives other numbers, and the baseline trains. Another study's verify repeats are never
    reused.
    """
    import optuna

    if not is_builtin_family(params.family):
        return None  # a family of one's own: its code may differ from another study's
    mine = {k: v for k, v in run.fingerprint().items() if k != "sampler_seed"}
    for other in storage.get_all_studies():
        stored = Stored.from_attrs(other.user_attrs, other.system_attrs)
        fingerprint = {k: v for k, v in (stored.fingerprint or {}).items() if k != "sampler_seed"}
        if other.study_name == run.study_name or fingerprint != mine or not stored.file_text:
            continue
        try:
            spec = spec_from_stored(
                stored.file_text, name=stored.file_name or "", study=other.study_name,
                fingerprint=stored.fingerprint or {},
            )  # fmt: skip
        except UserError:
            continue  # a study file this version cannot read
        if (spec.augmentation, spec.score) != (run.spec.augmentation, run.spec.score):
            continue
        done = storage.get_all_trials(
            storage.get_study_id_from_name(other.study_name),
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE,),
        )
        for t in done:
            record = records.read(t)
            same = (record.params, record.seed, record.platform) == (params, seed, platform)
            if record.is_baseline and same:
                return other.study_name, record
    return None


def mark_companion(companion: optuna.Study, of: str) -> None:
    """Say in ``companion``'s attrs which study's trials it repeats."""
    companion.set_user_attr("verifies", of)


@dataclass(frozen=True)
class KeptModel:
    """A trial whose trained model the study keeps as an artifact."""

    trial: int
    value: float
    artifact_id: str


def kept_models(storage: optuna.storages.BaseStorage, study: optuna.Study) -> list[KeptModel]:
    """The models the study keeps, best first."""
    attrs = storage.get_study_system_attrs(_optuna.study_id(study))
    return [KeptModel(**k) for k in attrs.get(KEPT_ATTR) or []]


def set_kept_models(
    storage: optuna.storages.BaseStorage, study: optuna.Study, kept: list[KeptModel]
) -> None:
    storage.set_study_system_attr(_optuna.study_id(study), KEPT_ATTR, [vars(m) for m in kept])
