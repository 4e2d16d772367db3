"""Keras callbacks; imported only where a model trains, so Keras loads only there."""

from __future__ import annotations

from collections.abc import Callable

import keras


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


class ReportOnly(keras.callbacks.Callback):
    """Reports validation accuracy to Optuna each epoch without ever pruning (the baseline)."""

    def __init__(self, trial: object, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self._trial = trial
        self._monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self._monitor)
        if value is not None:
            self._trial.report(float(value), step=epoch)  # type: ignore[attr-defined]


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
