"""Keras callbacks; imported only where a model trains, so Keras loads only there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import optuna


class EpochLog(keras.callbacks.Callback):
    """Collects per-epoch logs, also of runs that end by pruning or NaN (no History then)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy (the first of equals)
    and puts them back when training ends, so the model is scored and kept as of that epoch.
    A copy in host memory each time the best improves: these models are small."""

    def __init__(self, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self._monitor = monitor
        self._best = -float("inf")
        self._weights: list[object] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self._monitor)
        if value is not None and value > self._best:
            self._best, self._weights = value, self.model.get_weights()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)


class ReportEpochs(keras.callbacks.Callback):
    """Reports the monitored metric to Optuna after each epoch and prunes the trial when its
    pruner says so (never when ``prune`` is false: the baseline), and never after the last of
    ``epochs``: a trial that has paid for every epoch completes and shows what it scored.

    The step is the number of epochs trained so far, counting from 1, so that a pruner's
    resources are epochs: Hyperband with min resource 1 and factor 3 decides after epochs 1,
    3 and 9, and the median pruner's ``n_warmup_steps`` is the epochs every trial trains
    first. (optuna-integration's KerasPruningCallback reports Keras's 0-based epoch index,
    which puts every rung one epoch late.)
    """

    def __init__(
        self, trial: optuna.Trial, *, prune: bool, epochs: int, monitor: str = "val_accuracy"
    ):
        super().__init__()
        self._trial = trial
        self._prune = prune
        self._epochs = epochs
        self._monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        import optuna

        value = (logs or {}).get(self._monitor)
        if value is None:
            return
        self._trial.report(float(value), step=epoch + 1)
        # Asked at the last epoch too: a pruner's bookkeeping (Hyperband's rungs) needs it.
        if self._prune and self._trial.should_prune() and epoch + 1 < self._epochs:
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")


class StopWhenAsked(keras.callbacks.Callback):
    """Raises :class:`KeyboardInterrupt` before the next batch once ``asked()`` is true.

    The signal handler raises it too, at once; but library code that catches everything
    (a ``__del__``, a weakref callback, a ``finally`` that retries) can swallow that one, and
    the trial would then train to its last epoch. This check loses at most one batch.
    """

    def __init__(self, asked: Callable[[], bool]) -> None:
        super().__init__()
        self._asked = asked

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self._asked():
            raise KeyboardInterrupt

    on_test_batch_begin = on_train_batch_begin
