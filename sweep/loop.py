"""The trial loop: claim a trial, run it, tell the storage, until the study's budget is spent.

The budget belongs to the study, not to the process: a trial counts once it has finished
(complete, pruned, or failed on its own account) or while it runs. Checking the budget and
claiming a trial happen under :func:`sweep.storage.study_lock`, so N workers end with exactly
the budget, never more. A worker with nothing left to claim waits while other workers' trials
run: if one of those workers dies, its trial goes stale and a waiting worker runs it again.
Each trial runs through ``study.optimize(n_trials=1)``, which claims enqueued trials (the
baseline, the grid points, retries) before sampling new ones and keeps the trial's heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sweep import _optuna, records
from sweep.errors import Interrupted, StorageUnavailable, TrialFailure
from sweep.stop import StopEvent
from sweep.storage import HEARTBEAT_GRACE_S, HEARTBEAT_INTERVAL_S, Held, study_lock

if TYPE_CHECKING:
    import optuna

__all__ = ["budget_counts", "counts", "finished", "requeue_trials_of", "run_trials", "worker_id"]

log = logging.getLogger(__name__)
_E = TypeVar("_E", bound=BaseException)

OnTrialEnd = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def worker_id(pid: int) -> str:
    """How a trial names the process that ran it (its record's ``worker``)."""
    return f"{socket.gethostname()}:{pid}"


def counts(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(finished, running) among ``trials`` that count against the budget; a failed trial
    that was run again (a dead worker's, an interrupted one) does not count."""
    return _tally({t.number: t.state for t in trials}, records.superseded(trials))


def budget_counts(study: optuna.Study, storage: Any) -> tuple[int, int]:
    """:func:`counts` of all the study's trials, read from sweep's storage (the one
    :func:`sweep.storage.open_storage` opens) in narrow queries: the trial loop's check,
    under the study lock. A RUNNING trial with no heartbeat, which another Optuna client
    asked and no worker runs, holds no budget: it would never end or go stale."""
    return storage.get_budget_counts(
        _optuna.study_id(study), records.SUPERSEDING_ATTRS, records.superseded_by
    )


def _tally(states: dict[int, optuna.trial.TrialState], ignored: set[int]) -> tuple[int, int]:
    from optuna.trial import TrialState

    counted = [s for n, s in states.items() if n not in ignored]
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(s in done for s in counted), sum(s == TrialState.RUNNING for s in counted)


def finished(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed by themselves."""
    return counts(study.get_trials(deepcopy=False))[0]


class _OwnFailureLog(logging.Filter):
    """Drops Optuna's own report of a failed trial: :func:`run_trials` reports each failure
    once, in one line (a traceback only for an unexpected exception, none for Ctrl-C)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return " failed with " not in record.getMessage()


def _quiet_optuna_failures() -> None:
    optuna_log = logging.getLogger(_optuna.OPTIMIZE_LOGGER)
    if not any(isinstance(f, _OwnFailureLog) for f in optuna_log.filters):
        optuna_log.addFilter(_OwnFailureLog())


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    storage: optuna.storages.RDBStorage,
    budget: int,
    stop: StopEvent,
    on_trial_end: Sequence[OnTrialEnd] = (),
    most: int | None = None,
) -> int:
    """Run trials until the study has ``budget`` finished ones, or until ``most`` ran here;
    return how many ran here.

    A pruned trial ends PRUNED. A trial that diverges ends PRUNED too, with the reason in its
    record's ``failure``, so it spends budget but can never be the best. Any other exception
    inside a trial is recorded in ``failure`` and the trial ends FAIL; the loop goes on.
    Once ``stop`` is set (Ctrl-C, SIGTERM), the running trial is failed and enqueued again
    with its params (it spends no budget) and :class:`~sweep.errors.Interrupted` is raised.

    Args:
        storage: The storage ``study`` was opened with (its lock and heartbeat).
        on_trial_end: Called after each trial this process ran is told; a failure there is
            logged, never fatal (the trial is stored already).
    """
    import optuna

    _quiet_optuna_failures()
    worker = worker_id(os.getpid())
    claim = contextlib.ExitStack()

    lock = Held()

    def guarded(trial: optuna.Trial) -> float:
        try:
            return attempt(trial)
        except KeyboardInterrupt:
            # Wherever in the trial it landed: its params run again, and it spends no budget.
            _requeue(study, _frozen(study, trial))
            raise

    def attempt(trial: optuna.Trial) -> float:
        claim.close()  # the trial is claimed, with its first heartbeat: let other workers in
        records.write_worker(trial, worker)
        if lock.lost and _over_budget(study, storage, trial.number, budget):
            records.write_given_back(trial)
            if records.planned_params(trial) is not None:
                _requeue(study, _frozen(study, trial))  # a grid point is never dropped
            log.warning("trial %d: %s", trial.number, records.GIVEN_BACK)
            raise _GivenBack(records.GIVEN_BACK)
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except TrialFailure as exc:
            records.write_failure(trial, str(exc))
            log.warning("trial %d: %s", trial.number, exc)
            raise optuna.TrialPruned(str(exc)) from None
        except KeyboardInterrupt:
            raise  # requeued by guarded
        except StorageUnavailable:
            raise  # nothing can be recorded: the loop stops (see below)
        except Exception as exc:
            if stop.is_set():  # the interrupt, wrapped by a library on its way up
                raise KeyboardInterrupt from exc
            records.write_failure(trial, f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            raise

    def told(done: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        for hook in on_trial_end:
            try:
                hook(done, frozen)
            except Exception:  # noqa: BLE001 - the trial is stored already; keep working
                log.warning("after trial %d:\n%s", frozen.number, traceback.format_exc())

    ran, waiting = 0, False
    try:
        while not stop.is_set():
            with claim:
                lock = claim.enter_context(study_lock(storage, study.study_name))
                if stop.is_set():  # asked while it waited for the lock
                    break
                done, running = budget_counts(study, storage)
                if done < budget <= done + running:
                    # No room: fail dead workers' trials, whose RUNNING state holds budget.
                    # (With room, Optuna fails them itself before each trial it runs.)
                    _fail_stale(study)
                    done, running = budget_counts(study, storage)
                if done >= budget:
                    return ran
                if done + running < budget:
                    # The lock is held until the objective starts: the claimed trial counts.
                    try:
                        with _optuna.claiming(storage):
                            study.optimize(
                                guarded, n_trials=1, catch=(Exception,), callbacks=[told]
                            )
                    except optuna.exceptions.UpdateFinishedTrialError as exc:
                        # Its heartbeat lapsed (the storage was away longer than the grace
                        # period) and another worker failed it; it runs again as a retry.
                        log.warning("a trial was failed by another worker while it ran: %s", exc)
                    except Exception as exc:
                        # Optuna's tell was cut short (an UnboundLocalError in its own
                        # clean-up follows): by a lost storage, say so; by Ctrl-C, which a
                        # storage call raises once it ends, stop as for any Ctrl-C (below).
                        if _cause(exc, KeyboardInterrupt) is not None:
                            raise KeyboardInterrupt from None
                        lost = _cause(exc, StorageUnavailable)
                        if lost is None:
                            raise
                        raise lost from None
                    ran += 1
                    if most is not None and ran >= most:
                        return ran
                    continue
            # Other workers' trials are running: wait for them to finish, or to go stale. A
            # check is a lock and two narrow queries; every 0.5 s, the last worker to finish
            # is not kept waiting for the others' next look.
            if not waiting:
                waiting = True
                log.info(
                    "study %r: %d of %d trials finished, %d running on other workers; waiting "
                    "for them to end (a dead worker's trial runs again here after %d s)",
                    study.study_name, done, budget, running, HEARTBEAT_GRACE_S,
                )  # fmt: skip
            stop.wait(min(HEARTBEAT_INTERVAL_S, 0.5))
    except KeyboardInterrupt:
        # The signal's own interrupt. A trial it caught outside the objective (claimed, not
        # yet started) is still RUNNING here: fail it and run it again, as `guarded` does.
        requeue_trials_of(study, storage, {worker})
    raise Interrupted("the running trial, if any, was requeued; run the same command to resume")


class _GivenBack(Exception):
    pass


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The ``kind`` exception behind ``exc`` (itself, its cause or its context), if any."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _over_budget(
    study: optuna.Study, storage: optuna.storages.BaseStorage, number: int, budget: int
) -> bool:
    """Whether trial ``number`` was claimed past the budget. Only possible when the study
    lock was lost between the budget check and the claim (the server restarted): then
    another worker may have claimed the same slot; the later trial gives way."""
    with study_lock(storage, study.study_name):
        trials = study.get_trials(deepcopy=False)
    retried = records.superseded(trials)
    counted = sorted(
        t.number for t in trials if t.number not in retried and t.state.name != "WAITING"
    )
    return number in counted[budget:]


def _fail_stale(study: optuna.Study) -> None:
    """Fail (and requeue, by the storage's callback) trials whose heartbeat stopped."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _frozen(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[trial.number]  # numbers index the trial list


def _requeue(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    """Enqueue an interrupted trial again with its params. Its failed run spends no budget
    and no retry: those are kept for dead workers (the storage's stale-trial callback)."""
    study.add_trial(records.retry_copy(frozen))


def requeue_trials_of(
    study: optuna.Study, storage: optuna.storages.BaseStorage, workers: set[str]
) -> int:
    """Fail and enqueue again the RUNNING trials of ``workers``, killed because they did not
    stop when asked; return how many. Like a stopped worker's, their runs spend no retry.
    """
    import optuna
    from optuna.trial import TrialState

    requeued = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if records.read(t).worker not in workers:
            continue
        try:
            if not storage.set_trial_state_values(_optuna.trial_id(t), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        _requeue(study, t)
        requeued += 1
    return requeued
