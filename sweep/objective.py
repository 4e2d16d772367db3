"""One trial: suggest its params, build its family, train with pruning, evaluate, record.

The objective value is the validation accuracy after the last epoch (maximize); the test set is
only evaluated and recorded, never used to select. Every trial records as user attrs:
``family``, ``params``, ``seed``, ``val_accuracy``, ``test_accuracy``, ``test_loss``,
``precision``, ``recall`` (macro), ``n_params``, ``epochs_run``, ``train_seconds``,
``is_baseline`` and, once the baseline is complete, ``delta_vs_baseline`` (this trial's value
minus the baseline's) and ``delta_test_vs_baseline``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from sweep import data
from sweep.config import Params, StudySpec
from sweep.errors import TrialFailure
from sweep.space import suggest

if TYPE_CHECKING:
    import keras
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from sweep._callbacks import EpochLog

__all__ = ["Objective", "Scores", "baseline_trial", "scores", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """What one training run achieved."""

    val_accuracy: float
    test_accuracy: float
    test_loss: float
    precision: float
    recall: float
    epochs_run: int
    train_seconds: float
    n_params: int
    history: dict[str, list[float]]
    confusion: list[list[int]]  # test set: true class (rows) x predicted class (columns)


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, cross-entropy loss, macro precision and recall, and the confusion matrix
    (true class by predicted class, as lists) from predictions."""
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    confusion = np.bincount(
        labels * n_classes + predicted, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    true_pos = np.diag(confusion).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(true_pos / confusion.sum(axis=0))
        recall = np.nan_to_num(true_pos / confusion.sum(axis=1))
    # Clipped as Keras's sparse categorical cross-entropy does.
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(picked).mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "confusion": confusion.tolist(),
    }


def train(
    params: Params,
    splits: data.Splits,
    *,
    spec: StudySpec,
    seed: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
    epoch_log: EpochLog | None = None,
) -> tuple[keras.Model, Scores]:
    """Train ``params``' model on ``splits`` and score it on the test set.

    ``epoch_log`` collects the per-epoch metrics; pass one to read them after a pruned run.

    Raises:
        TrialFailure: the loss became NaN or infinite (the run diverged).
    """
    import keras

    from sweep import models
    from sweep._callbacks import EpochLog

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = models.build(params)
    augment = data.augmenter(spec.augmentation, params.augment, seed=seed)
    train_ds = data.train_dataset(
        splits.x_train,
        splits.y_train,
        batch_size=params.batch_size,
        seed=seed,
        augment=augment,
    )
    val_ds = data.eval_dataset(splits.x_val, splits.y_val)
    epochs = epoch_log or EpochLog()
    start = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=params.epochs,
        verbose=0,
        callbacks=[epochs, keras.callbacks.TerminateOnNaN(), *(callbacks or [])],
    )
    seconds = time.perf_counter() - start
    loss = epochs.history.get("loss", [])
    if not loss or not all(math.isfinite(v) for v in loss):
        last = loss[-1] if loss else float("nan")
        raise TrialFailure(f"diverged: training loss became {last} in epoch {len(loss)}")
    probabilities = model.predict(data.eval_dataset(splits.x_test, splits.y_test), verbose=0)
    test = scores(probabilities, splits.y_test)
    return model, Scores(
        val_accuracy=float(epochs.history["val_accuracy"][-1]),
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        precision=test["precision"],
        recall=test["recall"],
        epochs_run=len(loss),
        train_seconds=seconds,
        n_params=model.count_params(),
        history=epochs.history,
        confusion=test["confusion"],
    )


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's completed baseline trial, if any (the latest, should it have run twice)."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    baselines = [t for t in done if t.user_attrs.get("is_baseline")]
    return baselines[-1] if baselines else None


class Objective:
    """The Optuna objective of a study: one call trains and records one trial.

    The data is loaded once, by the caller, and shared by every trial of the process. With an
    artifact store, each completed trial also uploads its figures, note and (if it ranks among
    the study's ``keep_models`` best) its model: :func:`sweep.artifacts.publish_trial`.
    """

    def __init__(
        self,
        spec: StudySpec,
        splits: data.Splits,
        *,
        max_epochs: int | None = None,
        artifacts: FileSystemArtifactStore | None = None,
    ):
        self.spec = spec
        self.splits = splits
        self.max_epochs = max_epochs
        self.artifacts = artifacts

    def params(self, trial: optuna.Trial) -> Params:
        params = suggest(trial, self.spec)
        if self.max_epochs is not None and params.epochs > self.max_epochs:
            params = replace(params, epochs=self.max_epochs)
        return params

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna
        from optuna_integration.keras import KerasPruningCallback

        from sweep._callbacks import EpochLog, ReportOnly

        params = self.params(trial)
        is_baseline = bool(trial.user_attrs.get("is_baseline", False))
        seed = self.spec.seed * 100_003 + trial.number
        for key, value in {
            "family": params.family,
            "params": asdict(params),
            "seed": seed,
            "is_baseline": is_baseline,
        }.items():
            trial.set_user_attr(key, value)
        # The baseline is never pruned: every other trial is measured against it.
        pruning = ReportOnly(trial) if is_baseline else KerasPruningCallback(trial, "val_accuracy")
        epoch_log = EpochLog()
        try:
            model, result = train(
                params,
                self.splits,
                spec=self.spec,
                seed=seed,
                callbacks=[pruning],
                epoch_log=epoch_log,
            )
        except (optuna.TrialPruned, TrialFailure):
            trial.set_user_attr("epochs_run", epoch_log.epochs)
            trial.set_user_attr("history", epoch_log.history)
            loss = epoch_log.history.get("loss", [])
            if loss and not math.isfinite(loss[-1]):
                # The pruner may stop a run in the very epoch its loss blew up: say why.
                trial.set_user_attr(
                    "failure", f"diverged: training loss became {loss[-1]} in epoch {len(loss)}"
                )
            raise
        base = self._record(trial, result)
        if self.artifacts is not None:
            from sweep.artifacts import publish_trial
            from sweep.plots import CIFAR10_CLASSES

            try:
                publish_trial(
                    trial,
                    self.artifacts,
                    params=asdict(params),
                    result=result,
                    model=model,
                    baseline=base,
                    keep=self.spec.keep_models,
                    classes=CIFAR10_CLASSES if self.spec.dataset == "cifar10" else (),
                )
            except OSError as exc:  # a full or vanished artifact folder costs files, not the trial
                log.warning("trial %d: could not write its artifacts: %s", trial.number, exc)
                trial.set_user_attr("artifacts_error", str(exc))
        return result.val_accuracy

    def _record(self, trial: optuna.Trial, result: Scores) -> optuna.trial.FrozenTrial | None:
        """Record the trial's scores and Δs; return the completed baseline, if any."""
        attrs: dict[str, Any] = {
            "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy,
            "test_loss": result.test_loss,
            "precision": result.precision,
            "recall": result.recall,
            "n_params": result.n_params,
            "epochs_run": result.epochs_run,
            "train_seconds": round(result.train_seconds, 3),
            "history": result.history,
        }
        base = baseline_trial(trial.study)
        if trial.user_attrs.get("is_baseline"):
            attrs["delta_vs_baseline"] = 0.0
            attrs["delta_test_vs_baseline"] = 0.0
        elif base is not None and base.value is not None:
            attrs["delta_vs_baseline"] = result.val_accuracy - base.value
            attrs["delta_test_vs_baseline"] = (
                result.test_accuracy - base.user_attrs["test_accuracy"]
            )
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return base
