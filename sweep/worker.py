"""The trial loop: claim a trial, run it, tell the storage, until the study's budget is spent.

The budget belongs to the study, not to the process: a trial counts once it has finished
(complete, pruned, or failed on its own account). Each trial runs through
``study.optimize(n_trials=1)``, which claims enqueued trials (the baseline, the grid points)
before sampling new ones and keeps the trial's heartbeat while it runs.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from sweep.errors import TrialFailure

if TYPE_CHECKING:
    import optuna

__all__ = ["finished", "remaining", "run_trials"]

log = logging.getLogger(__name__)


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were run again (a dead worker's, an interrupted one)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _count(study: optuna.Study, *, running: bool) -> int:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    states = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    if running:
        states.add(TrialState.RUNNING)
    return sum(1 for t in trials if t.state in states and t.number not in retried)


def finished(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed by themselves."""
    return _count(study, running=False)


def remaining(study: optuna.Study, budget: int) -> int:
    """How many more trials this study may start (finished and running ones count)."""
    return budget - _count(study, running=True)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    budget: int,
    on_trial_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> int:
    """Run trials until the study has ``budget`` finished ones; return how many ran here.

    A pruned trial ends PRUNED. A trial that diverges ends PRUNED too, with the reason in its
    ``failure`` user attr, so it spends budget but can never be the best. Any other exception
    inside a trial is recorded in ``failure`` and the trial ends FAIL; the loop goes on.
    Ctrl-C fails the running trial, enqueues its params again (it spends no budget) and
    re-raises.
    """
    import optuna

    def guarded(trial: optuna.Trial) -> float:
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except TrialFailure as exc:
            trial.set_user_attr("failure", str(exc))
            log.warning("trial %d: %s", trial.number, exc)
            raise optuna.TrialPruned(str(exc)) from None
        except KeyboardInterrupt:
            _requeue(study, trial)
            raise
        except Exception as exc:
            trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            raise

    def tell(_: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_trial_end is not None:
            on_trial_end(frozen)

    ran = 0
    while True:
        # Fail dead workers' trials first: a stale RUNNING trial would otherwise hold budget.
        _fail_stale(study)
        if remaining(study, budget) <= 0:
            break
        # One trial per call, so the budget is re-read from the storage before every trial.
        study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=[tell])
        ran += 1
    return ran


def _fail_stale(study: optuna.Study) -> None:
    """Fail (and requeue, by the storage's callback) trials whose heartbeat stopped."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Enqueue an interrupted trial again, as a dead worker's is: its failed run spends no
    budget, because its number lands in the new trial's ``retry_history``."""
    import optuna

    frozen = study.get_trials(deepcopy=False)[trial.number]  # numbers index the trial list
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)
