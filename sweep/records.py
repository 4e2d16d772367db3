"""One typed record of a trial, and the only module that reads or writes trial attrs.

A trial's record lives in Optuna's user attrs, where the dashboard, ``optuna`` CLI and plain
``optuna.load_study`` show it. :class:`TrialRecord` is that record as a frozen dataclass:
:func:`read` builds it from a finished or running trial, and the ``write_*`` functions set
its fields on a live trial as they become known (a trial records what it is before it
trains, and its scores once it has). The baseline lookup and the deltas against the
baseline are computed here, once, in fractions; tables turn them into percentage points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sweep import _optuna
from sweep.config import Params

if TYPE_CHECKING:
    import keras
    import optuna

__all__ = [
    "Completed",
    "Scores",
    "TrialRecord",
    "baseline",
    "delta",
    "is_baseline",
    "planned_attrs",
    "planned_params",
    "point_key",
    "read",
    "read_all",
    "repeat_attrs",
    "write_artifacts_error",
    "write_failure",
    "write_partial",
    "write_reused",
    "write_scores",
    "write_start",
    "write_worker",
]


@dataclass(frozen=True)
class Scores:
    """What one training run achieved. ``val_accuracy`` is the last epoch's; ``score`` is the
    objective, the last or the best epoch's as the study chose (``score`` in its file); the
    test scores are of the model that earned it."""

    val_accuracy: float
    best_val_accuracy: float
    best_epoch: int  # counted from 1
    score: float
    test_accuracy: float
    test_loss: float
    precision: float
    recall: float
    epochs_run: int
    train_seconds: float
    n_params: int
    history: dict[str, list[float]]
    confusion: list[list[int]]  # test set: true class (rows) x predicted class (columns)


@dataclass(frozen=True)
class Completed:
    """A trial that just completed, as its ``on_complete`` hook gets it."""

    params: Params
    scores: Scores
    model: keras.Model
    baseline: TrialRecord | None  # the completed baseline, None if this is it or it is not done


@dataclass(frozen=True)
class TrialRecord:
    """What a trial is and what it achieved. Fields a trial has not reached yet are None.

    The deltas are fractions: this trial's value minus the completed baseline's, recorded once
    the trial completes (None if the baseline had not finished by then: use :func:`delta`
    against :func:`baseline` to get it later).
    """

    number: int
    state: str  # Optuna's TrialState name
    value: float | None = None
    params: Params | None = None
    is_baseline: bool = False
    point: str | None = None  # planned trials: the canonical JSON of their Params
    seed: int | None = None  # the training seed
    worker: str | None = None  # host:pid of the process that ran it
    backend: str | None = None  # the Keras backend it trained on
    # What its numbers depend on beyond the seed: software versions, processor, threads
    # (sweep.training.platform); the same seed repeats them only where this is the same.
    platform: str | None = None
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    precision: float | None = None
    recall: float | None = None
    n_params: int | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    delta_vs_baseline: float | None = None
    delta_test_vs_baseline: float | None = None
    failure: str | None = None  # why it failed, diverged or was pruned
    artifacts_error: str | None = None  # why its figures could not be written
    reused_from: str | None = None  # a baseline copied from another study, not trained
    source_trial: int | None = None  # a verify repeat: the trial it repeats
    repeat: int | None = None  # a verify repeat: its index

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.value is not None

    def to_attrs(self) -> dict[str, Any]:
        """The user attrs of this record (what is set; the family shown on its own)."""
        attrs: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_ATTRS:
                continue
            value = getattr(self, f.name)
            if value is None or (f.name == "history" and not value):
                continue
            attrs[f.name] = value.to_dict() if isinstance(value, Params) else value
        if self.params is not None:
            attrs["family"] = self.params.family  # a column of its own in the dashboard
        return attrs


_NOT_ATTRS = frozenset({"number", "state", "value"})  # Optuna's own columns
_ATTR_FIELDS = frozenset(f.name for f in fields(TrialRecord)) - _NOT_ATTRS


def _from_attrs(number: int, state: str, value: float | None, attrs: dict[str, Any]) -> TrialRecord:
    known = {k: v for k, v in attrs.items() if k in _ATTR_FIELDS}
    raw = known.pop("params", None)
    params = Params.from_dict(raw) if isinstance(raw, dict) else None
    known["is_baseline"] = bool(known.get("is_baseline", False))
    return TrialRecord(number=number, state=state, value=value, params=params, **known)


def read(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The record of a trial as the storage holds it."""
    value = trial.value if trial.state.name == "COMPLETE" else None
    return _from_attrs(trial.number, trial.state.name, value, trial.user_attrs)


def read_all(study: optuna.Study) -> list[TrialRecord]:
    """Every trial's record, in trial order (one storage read)."""
    return [read(t) for t in study.get_trials(deepcopy=False)]


def baseline(records: list[TrialRecord]) -> TrialRecord | None:
    """The completed baseline among ``records`` (the latest, should it have run twice)."""
    done = [r for r in records if r.is_baseline and r.complete and r.source_trial is None]
    return done[-1] if done else None


def delta(mine: float | None, theirs: float | None) -> float | None:
    """``mine - theirs`` as a fraction, None when either is missing."""
    return None if mine is None or theirs is None else mine - theirs


# --------------------------------------------------------------------------- writing


def point_key(params: Params) -> str:
    """A canonical JSON of the params; identifies a planned trial across runs."""
    return json.dumps(params.to_dict(), sort_keys=True)


def planned_attrs(params: Params, *, is_baseline: bool) -> dict[str, Any]:
    """The user attrs a planned trial (the baseline, a grid point) is enqueued with."""
    return {"point": point_key(params), "is_baseline": is_baseline}


def planned_params(trial: optuna.Trial | optuna.trial.FrozenTrial) -> Params | None:
    """The Params a planned trial was enqueued with; None for a sampled trial."""
    point = trial.user_attrs.get("point")
    return None if point is None else Params.from_dict(json.loads(point))


def is_baseline(trial: optuna.Trial | optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get("is_baseline", False))


def _write(trial: optuna.Trial, values: dict[str, Any]) -> None:
    _optuna.set_user_attrs(trial, {k: v for k, v in values.items() if v is not None})


def write_start(
    trial: optuna.Trial, params: Params, *, seed: int, backend: str, platform: str
) -> None:
    """What the trial is, before it trains: its params, training seed, Keras backend and the
    platform it trains on."""
    record = TrialRecord(
        trial.number,
        "RUNNING",
        params=params,
        seed=seed,
        backend=backend,
        platform=platform,
        is_baseline=is_baseline(trial),
    )
    _write(trial, {k: v for k, v in record.to_attrs().items() if k != "point"})


def write_worker(trial: optuna.Trial, worker: str) -> None:
    _write(trial, {"worker": worker})


def write_failure(trial: optuna.Trial, reason: str) -> None:
    _write(trial, {"failure": reason})


def write_artifacts_error(trial: optuna.Trial, reason: str) -> None:
    _write(trial, {"artifacts_error": reason})


def write_partial(trial: optuna.Trial, *, epochs_run: int, history: dict[str, list[float]]) -> None:
    """What a run that was pruned or diverged got through."""
    _write(trial, {"epochs_run": epochs_run, "history": history})


def write_reused(trial: optuna.Trial, source: str, record: TrialRecord) -> None:
    """Record on ``trial`` the scores of the identical baseline ``record`` of study
    ``source``, which it reuses instead of training (:func:`sweep.study.reusable_baseline`)."""
    keep = ("params", "is_baseline", "point", "seed", "worker", "source_trial", "repeat")
    copied = {k: v for k, v in record.to_attrs().items() if k not in keep}
    copied["train_seconds"] = 0.0
    _write(trial, copied | {"reused_from": f"study {source!r}, trial {record.number}"})


def write_scores(trial: optuna.Trial, scores: Scores, base: TrialRecord | None) -> None:
    """The trial's scores, and its deltas against the completed baseline ``base``."""
    values: dict[str, Any] = {
        "val_accuracy": scores.val_accuracy,
        "best_val_accuracy": scores.best_val_accuracy,
        "best_epoch": scores.best_epoch,
        "test_accuracy": scores.test_accuracy,
        "test_loss": scores.test_loss,
        "precision": scores.precision,
        "recall": scores.recall,
        "n_params": scores.n_params,
        "epochs_run": scores.epochs_run,
        "train_seconds": round(scores.train_seconds, 3),
        "history": scores.history,
    }
    if is_baseline(trial):
        values |= {"delta_vs_baseline": 0.0, "delta_test_vs_baseline": 0.0}
    elif base is not None:
        values |= {
            "delta_vs_baseline": delta(scores.score, base.value),
            "delta_test_vs_baseline": delta(scores.test_accuracy, base.test_accuracy),
        }
    _write(trial, values)


def repeat_attrs(
    target: TrialRecord, *, repeat: int, seed: int, scores: Scores | None, failure: str | None
) -> dict[str, Any]:
    """The user attrs of one ``verify`` repeat of ``target``, recorded in one insert."""
    record = TrialRecord(
        number=-1,
        state="COMPLETE" if scores is not None else "FAIL",
        params=target.params,
        is_baseline=target.is_baseline,
        seed=seed,
        source_trial=target.number,
        repeat=repeat,
        failure=failure,
        val_accuracy=None if scores is None else scores.val_accuracy,
        test_accuracy=None if scores is None else scores.test_accuracy,
        test_loss=None if scores is None else scores.test_loss,
        epochs_run=None if scores is None else scores.epochs_run,
    )
    return record.to_attrs()
