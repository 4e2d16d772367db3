"""The trial loop: claim a trial within the study's budget, run it, tell the storage, until
the budget is spent.

The budget, what counts against it and the claim are :mod:`sweep.budget`'s. A worker with
nothing left to claim waits while other workers' trials run: if one of those workers dies, its
trial goes stale and a waiting worker runs it again. Each trial runs through
``study.optimize(n_trials=1)``, which claims enqueued trials (the baseline, the grid points,
retries) before sampling new ones and keeps the trial's heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from sweep import _optuna, records
from sweep.budget import GIVEN_BACK, Claim, Count, give_back, requeue, requeue_trials_of
from sweep.errors import Interrupted, StorageUnavailable, TrialFailure
from sweep.settings import current
from sweep.stop import StopEvent

if TYPE_CHECKING:
    import optuna

    from sweep.rdb import SweepStorage

__all__ = ["run_trials", "worker_id"]

log = logging.getLogger(__name__)
_E = TypeVar("_E", bound=BaseException)

OnTrialEnd = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def worker_id(pid: int) -> str:
    """How a trial names the process that ran it (its record's ``worker``)."""
    return f"{socket.gethostname()}:{pid}"


class _OwnFailureLog(logging.Filter):
    """Drops Optuna's own report of a failed trial: the loop reports each failure once, in
    one line (a traceback only for an unexpected exception, none for Ctrl-C)."""

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
    storage: SweepStorage,
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
    _quiet_optuna_failures()
    one = _OneTrial(study, objective, stop, on_trial_end)
    ran, waited = 0, False
    try:
        while not stop.is_set():
            with Claim(study, storage, budget) as claim:
                if stop.is_set():  # asked while it waited for the lock
                    break
                if claim.spent:
                    return ran
                if claim.room:
                    one.run(claim, storage)  # the lock is held until the trial is claimed
                    ran += 1
                    if most is not None and ran >= most:
                        return ran
                    continue
            # Other workers' trials hold the rest of the budget: wait for them to end, or to
            # go stale. Every 0.5 s at most, so the last worker to finish is not kept waiting.
            if not waited:
                waited = True
                _say_waiting(study, claim.count, budget)
            stop.wait(min(current().heartbeat_interval_s, 0.5))
    except KeyboardInterrupt:
        # The signal's own interrupt. A trial it caught outside the objective (claimed, not
        # yet started) is still RUNNING here: fail it and run it again, as the objective does.
        requeue_trials_of(study, storage, {one.worker})
    raise Interrupted("the running trial, if any, was requeued; run the same command to resume")


def _say_waiting(study: optuna.Study, count: Count, budget: int) -> None:
    log.info(
        "study %r: %d of %d trials finished, %d running on other workers; waiting for them "
        "to end (a dead worker's trial runs again here after %d s)",
        study.study_name, count.done, budget, count.running, current().heartbeat_grace_s,
    )  # fmt: skip


class _GivenBack(Exception):
    pass


class _OneTrial:
    """One trial of the loop: claimed by ``study.optimize``, run by ``objective``, its
    failures recorded once, its interruptions requeued."""

    def __init__(
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], float],
        stop: StopEvent,
        on_trial_end: Sequence[OnTrialEnd],
    ) -> None:
        self.study, self.objective, self.stop, self.hooks = study, objective, stop, on_trial_end
        self.worker = worker_id(os.getpid())
        self.claim: Claim | None = None

    def run(self, claim: Claim, storage: SweepStorage) -> None:
        """Claim and run one trial (``claim`` is released once it is claimed)."""
        import optuna

        from sweep.rdb import claiming

        self.claim = claim
        try:
            with claiming(storage):
                self.study.optimize(
                    self._guarded, n_trials=1, catch=(Exception,), callbacks=[self._told]
                )
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            # Its heartbeat lapsed (the storage was away longer than the grace period) and
            # another worker failed it; it runs again as a retry.
            log.warning("a trial was failed by another worker while it ran: %s", exc)
        except Exception as exc:
            # Optuna's tell was cut short (an UnboundLocalError in its own clean-up follows):
            # by a lost storage, say so; by Ctrl-C, which a storage call raises once it ends,
            # stop as for any Ctrl-C.
            if _cause(exc, KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            lost = _cause(exc, StorageUnavailable)
            if lost is None:
                raise
            raise lost from None

    def _guarded(self, trial: optuna.Trial) -> float:
        try:
            return self._attempt(trial)
        except KeyboardInterrupt:
            # Wherever in the trial it landed: its params run again, and it spends no budget.
            requeue(self.study, trial)
            raise

    def _attempt(self, trial: optuna.Trial) -> float:
        import optuna

        assert self.claim is not None
        self.claim.release()
        records.write_worker(trial, self.worker)
        if self.claim.over_budget(trial.number):
            give_back(self.study, trial)
            raise _GivenBack(GIVEN_BACK)
        try:
            return self.objective(trial)
        except optuna.TrialPruned:
            raise
        except TrialFailure as exc:
            records.write_failure(trial, str(exc))
            log.warning("trial %d: %s", trial.number, exc)
            raise optuna.TrialPruned(str(exc)) from None
        except (KeyboardInterrupt, StorageUnavailable):
            raise  # requeued by _guarded; nothing can be recorded: the loop stops
        except Exception as exc:
            if self.stop.is_set():  # the interrupt, wrapped by a library on its way up
                raise KeyboardInterrupt from exc
            records.write_failure(trial, f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            raise

    def _told(self, done: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        for hook in self.hooks:
            try:
                hook(done, frozen)
            except Exception:  # noqa: BLE001 - the trial is stored already; keep working
                log.warning("after trial %d:\n%s", frozen.number, traceback.format_exc())


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
