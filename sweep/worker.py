"""One worker: claim a trial, run it, tell the storage, until the study's budget is spent.

``python -m sweep.worker --study NAME --storage URL`` is one worker process: what the launcher
starts once per CPU share or GPU slot, and what docker-compose runs on each GPU host. Any
number of workers, on any number of hosts, share one study through its storage.

The budget belongs to the study, not to the process: a trial counts once it has finished
(complete, pruned, or failed on its own account) or while it runs. Checking the budget and
claiming a trial happen under :func:`sweep.storage.study_lock`, so N workers end with exactly
the budget, never more. A worker with nothing left to claim waits while other workers' trials
run: if one of those workers dies, its trial goes stale and a waiting worker runs it again.
Each trial runs through ``study.optimize(n_trials=1)``, which claims enqueued trials (the
baseline, the grid points, retries) before sampling new ones and keeps the trial's heartbeat.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from sweep.cli import stopping
from sweep.errors import TrialFailure

if TYPE_CHECKING:
    import optuna

__all__ = ["counts", "finished", "main", "parser", "requeue_trials_of", "run_trials", "worker_id"]

log = logging.getLogger(__name__)


def worker_id(pid: int) -> str:
    """How a trial names the process that ran it (its ``worker`` user attr)."""
    return f"{socket.gethostname()}:{pid}"


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were run again (a dead worker's, an interrupted one)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials that count against the budget."""
    return counts(study.get_trials(deepcopy=False))


def counts(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(finished, running) among ``trials`` that count against the budget."""
    from optuna.trial import TrialState

    retried = _retried(trials)
    counted = [t for t in trials if t.number not in retried]
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return (
        sum(t.state in done for t in counted),
        sum(t.state == TrialState.RUNNING for t in counted),
    )


def finished(study: optuna.Study) -> int:
    """Trials that count against the budget: complete, pruned, or failed by themselves."""
    return _counts(study)[0]


class _OwnFailureLog(logging.Filter):
    """Drops Optuna's own report of a failed trial: :func:`run_trials` reports each failure
    once, in one line (a traceback only for an unexpected exception, none for Ctrl-C)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return " failed with " not in record.getMessage()


_optuna_log = logging.getLogger("optuna.study._optimize")
if not any(isinstance(f, _OwnFailureLog) for f in _optuna_log.filters):
    _optuna_log.addFilter(_OwnFailureLog())


def _poll_seconds() -> float:
    from sweep.storage import HEARTBEAT_INTERVAL_S

    return float(min(HEARTBEAT_INTERVAL_S, 2))


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
    Ctrl-C (or SIGTERM) fails the running trial, enqueues its params again (it spends no
    budget) and re-raises.
    """
    import optuna

    from sweep.storage import study_lock

    worker = worker_id(os.getpid())
    claim = contextlib.ExitStack()

    def guarded(trial: optuna.Trial) -> float:
        # Beat once before letting go of the lock, so that no other worker ever sees this
        # trial RUNNING without a heartbeat (the storage fails such trials as orphans).
        _beat(study, trial)
        claim.close()
        trial.set_user_attr("worker", worker)
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
            if stopping():  # the interrupt, wrapped by a library on its way up
                _requeue(study, trial)
                raise KeyboardInterrupt from exc
            trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}")
            log.error("trial %d failed:\n%s", trial.number, traceback.format_exc())
            raise

    def tell(_: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        _refresh(study)
        if on_trial_end is not None:
            on_trial_end(frozen)

    ran = 0
    while True:
        with claim:
            claim.enter_context(study_lock(study._storage, study.study_name))
            # Fail dead workers' trials first: a stale RUNNING trial would otherwise hold budget.
            _fail_stale(study)
            done, running = _counts(study)
            if done >= budget:
                return ran
            if done + running < budget:
                # The lock is held until the objective starts: the claimed trial is counted.
                try:
                    study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=[tell])
                except optuna.exceptions.UpdateFinishedTrialError as exc:
                    # Its heartbeat lapsed (the storage was away longer than the grace
                    # period) and another worker failed it; it runs again as a retry.
                    log.warning("a trial was failed by another worker while it ran: %s", exc)
                ran += 1
                continue
        # Other workers' trials are running: wait for them to finish, or to go stale.
        time.sleep(_poll_seconds())


def _refresh(study: optuna.Study) -> None:
    """Rewrite the study's leaderboard note and figure; a failure costs the note, not the run."""
    from sweep.artifacts import refresh_study

    try:
        refresh_study(study)
    except Exception:  # noqa: BLE001 - the trial is already told; keep working
        log.warning("could not update the study's note:\n%s", traceback.format_exc())


def _beat(study: optuna.Study, trial: optuna.Trial) -> None:
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage):
        storage.record_heartbeat(trial._trial_id)


def _fail_stale(study: optuna.Study) -> None:
    """Fail (and requeue, by the storage's callback) trials whose heartbeat stopped."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _requeue(study: optuna.Study, trial: optuna.Trial) -> None:
    """Enqueue an interrupted trial again, as a dead worker's is: its failed run spends no
    budget, because its number lands in the new trial's ``retry_history``."""

    frozen = study.get_trials(deepcopy=False)[trial.number]  # numbers index the trial list
    _retry(study, frozen)


def _retry(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)


def requeue_trials_of(study: optuna.Study, workers: set[str]) -> int:
    """Fail and enqueue again the RUNNING trials of killed ``workers``; return how many.

    What a surviving worker would do once their heartbeats went stale, done at once by the
    process that killed them.
    """
    import optuna
    from optuna.trial import TrialState

    requeued = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") not in workers:
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        _retry(study, t)
        requeued += 1
    return requeued


# --------------------------------------------------------------------------- the process


def parser() -> argparse.ArgumentParser:
    """``python -m sweep.worker``: one worker process."""
    from sweep.cli import Parser, add_study_options

    p = Parser(
        prog="python -m sweep.worker",
        description="One worker: take trials of a study until its budget is spent, then exit 0. "
        "Start as many as you like, on any host that reaches the storage.",
    )
    add_study_options(p)
    return p


def _main(args: argparse.Namespace) -> int:
    from sweep import cli, devices, study
    from sweep.objective import Objective
    from sweep.space import planned

    spec = cli.load_spec(args)
    url, stored = cli.check_storage(spec, args)
    # --n-trials, else what the launcher recorded on the study, else the file's; all settled
    # before anything is written.
    if args.n_trials is None and stored.get("budget") is not None:
        total = int(stored["budget"])
    else:
        total = study.budget(spec, args.n_trials, len(planned(spec)))
    devices.configure_tensorflow()
    the_study, splits, store = cli.open_run(
        spec, args, url, budget=total, worker=int(os.environ.get("SWEEP_WORKER_INDEX", "-1"))
    )
    name = the_study.study_name
    objective = Objective(spec, splits, max_epochs=args.max_epochs, artifacts=store)
    try:
        ran = run_trials(the_study, objective, budget=total)
    except KeyboardInterrupt:
        log.warning(
            "interrupted: the trial it was running, if any, was requeued; study %r has %d of "
            "%d trials",
            name,
            finished(the_study),
            total,
        )
        return 130
    log.info("study %r: budget of %d spent; this worker ran %d", name, total, ran)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from sweep import cli

    return cli.run_main(parser(), _main, argv, label=os.environ.get("SWEEP_WORKER_LABEL", ""))


if __name__ == "__main__":
    sys.exit(main())
