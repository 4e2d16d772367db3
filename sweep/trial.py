"""One trial: suggest its params, build its family, train with pruning, evaluate, record.

The objective value is the validation accuracy after the last epoch (maximize); the test set is
only evaluated and recorded, never used to select. What a trial records is a
:class:`~sweep.records.TrialRecord`. Once a trial completes, and while it still runs (Optuna
lets only a running trial take artifacts), the objective calls its ``on_complete`` hook with
the trained model: that is how figures and kept models are published (:mod:`sweep.artifacts`),
without the trainer knowing about them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from sweep import data, records
from sweep.config import Params, StudySpec
from sweep.errors import TrialFailure
from sweep.records import Completed, TrialRecord
from sweep.space import suggest
from sweep.stop import StopEvent
from sweep.training import diverged, platform, train, trial_seed

if TYPE_CHECKING:
    import keras
    import optuna

__all__ = ["Objective", "OnComplete"]

log = logging.getLogger(__name__)


OnComplete = Callable[["optuna.Trial", Completed], None]
# Finds an identical finished baseline elsewhere, trained with (params, seed) on this platform:
# (its study's name, its record), or None.
Reuse = Callable[[Params, int, str], "tuple[str, TrialRecord] | None"]


class Objective:
    """The Optuna objective of a study: one call trains and records one trial.

    The data is loaded once, by the caller, and shared by every trial of the process.
    ``on_complete`` runs after a trial's scores are recorded, while the trial still runs; an
    ``OSError`` there (a full or vanished artifact folder) is recorded on the trial, which
    still completes. Once ``stop`` is set, training stops before its next batch, even where
    the signal's own interrupt was swallowed on its way up. A baseline that ``reuse`` finds
    already trained (same data, params, seed and platform) is copied, not trained again.
    """

    def __init__(
        self,
        spec: StudySpec,
        splits: data.Splits,
        *,
        max_epochs: int | None = None,
        on_complete: OnComplete | None = None,
        stop: StopEvent | None = None,
        reuse: Reuse | None = None,
    ):
        self.spec = spec
        self.splits = splits
        self.max_epochs = max_epochs
        self.on_complete = on_complete
        self.stop = stop
        self.reuse = reuse

    def params(self, trial: optuna.Trial) -> Params:
        params = suggest(trial, self.spec)
        if self.max_epochs is not None and params.epochs > self.max_epochs:
            params = replace(params, epochs=self.max_epochs)
        return params

    def __call__(self, trial: optuna.Trial) -> float:
        # Keras: imported where a model trains
        import keras
        import optuna

        from sweep._callbacks import EpochLog, ReportEpochs, StopWhenAsked

        params = self.params(trial)
        seed = trial_seed(self.spec.seed, trial.number)
        here = platform()
        records.write_start(
            trial, params, seed=seed, backend=keras.backend.backend(), platform=here
        )
        if records.is_baseline(trial) and self.reuse is not None:
            found = self.reuse(params, seed, here)
            value = None if found is None else found[1].value
            if found is not None and value is not None:
                records.write_reused(trial, *found)
                log.info("trial %d: the baseline of study %r, reused", trial.number, found[0])
                return value
        # The baseline is never pruned: every other trial is measured against it.
        pruning = ReportEpochs(trial, prune=not records.is_baseline(trial), epochs=params.epochs)
        callbacks: list[keras.callbacks.Callback] = [pruning]
        if self.stop is not None:
            callbacks.append(StopWhenAsked(self.stop.is_set))
        epoch_log = EpochLog()
        try:
            model, result = train(
                params,
                self.splits,
                spec=self.spec,
                seed=seed,
                callbacks=callbacks,
                epoch_log=epoch_log,
            )
        except (optuna.TrialPruned, TrialFailure):
            records.write_partial(trial, epochs_run=epoch_log.epochs, history=epoch_log.history)
            loss = epoch_log.history.get("loss", [])
            if loss and not math.isfinite(loss[-1]):
                # The pruner may stop a run in the very epoch its loss blew up: say why.
                records.write_failure(trial, diverged(loss))
            raise
        base = records.baseline(records.read_all(trial.study))
        records.write_scores(trial, result, base)
        if self.on_complete is not None:
            done = Completed(params, result, model, None if records.is_baseline(trial) else base)
            try:
                self.on_complete(trial, done)
            except OSError as exc:  # a full or vanished artifact folder costs files, not the trial
                log.warning("trial %d: could not write its artifacts: %s", trial.number, exc)
                records.write_artifacts_error(trial, str(exc))
        return result.score
