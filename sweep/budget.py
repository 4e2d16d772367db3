"""The study's trial budget: how big it is, what counts against it, how a worker claims a
trial within it, and how a trial that did not run to its end is given back.

**Size**: ``--n-trials``, else the study file's ``n_trials``, else the grid's size
(:func:`total`). The budget belongs to the study, not to a process: every worker, on any
host, spends the same one.

**What counts**: a trial that has finished (complete, pruned, or failed on its own account)
or that runs. Three kinds never count: a failed attempt that was run again (after a dead
worker, as Optuna's ``retry_history`` lists it; after a stop, as ``sweep:interrupted`` lists
it), a trial given back unrun (``sweep:given_back``), and a RUNNING trial with no heartbeat,
which another Optuna client asked for (``optuna ask``, a script) and no worker runs: it never
goes stale, so a worker that counted it could wait for it without end.

**The claim** (:class:`Claim`): under the study lock (:func:`sweep.storage.study_lock`), a
worker counts, fails dead workers' trials if they hold the last of the budget, and claims a
trial only if there is room; the lock is held until the trial is claimed, so N workers end
with exactly the budget. If the lock was lost meanwhile (a server restart), the trial claimed
past the budget is given back (:func:`give_back`).

**Requeues**: a trial cut short by a stop (Ctrl-C, SIGTERM) or by a kill after one runs again
with its params as a new WAITING trial (:func:`requeue`) that spends neither budget nor
Optuna's retries, which are kept for dead workers (Optuna's stale-trial callback requeues
those).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sweep import _optuna, records
from sweep.config import MOST_TRIALS, StudySpec
from sweep.errors import UserError
from sweep.space import planned
from sweep.storage import Held, study_lock

if TYPE_CHECKING:
    import optuna

    from sweep.rdb import SweepStorage

__all__ = [
    "GIVEN_BACK",
    "Claim",
    "Count",
    "count",
    "counts",
    "fail_stale",
    "finished",
    "give_back",
    "requeue",
    "requeue_trials_of",
    "superseded",
    "total",
]

log = logging.getLogger(__name__)

# The system attrs that take a trial out of the budget. Optuna's stale-trial callback links a
# dead worker's retry to the attempts before it in "retry_history", and counts those against
# its retry limit; attempts lost to a stop are listed apart, in "sweep:interrupted".
_RETRIED = "retry_history"
_INTERRUPTED = "sweep:interrupted"
_GIVEN_BACK = "sweep:given_back"
SUPERSEDING_ATTRS = (_RETRIED, _INTERRUPTED, _GIVEN_BACK)

GIVEN_BACK = (
    "claimed past the budget while the study lock was lost (a storage restart); given back unrun"
)


def total(spec: StudySpec, requested: int | None) -> int:
    """The study's total trial budget: ``--n-trials``, else the file's, else the grid's size.

    Raises:
        UserError: a sampled search has no budget anywhere.
    """
    if requested is not None and requested > MOST_TRIALS:
        raise UserError(f"--n-trials {requested}: a study runs at most {MOST_TRIALS} trials")
    n_planned = len(planned(spec))
    if spec.sampler.name == "grid":
        size = n_planned  # every grid point once, and the baseline if it is not one of them
        if requested is not None and requested > size:
            log.warning("the grid has %d points; running %d trials, not %d", size, size, requested)
        return min(requested or spec.n_trials or size, size)
    if requested is not None:
        return requested
    if spec.n_trials is not None:
        return spec.n_trials
    if not spec.varying:
        return n_planned
    raise UserError(
        f"{spec.origin}: n_trials is missing; a {spec.sampler.name} search needs a budget "
        "(add n_trials = N to the file or pass --n-trials N)"
    )


# --------------------------------------------------------------------------- counting


class Count(NamedTuple):
    """Trials that count against the budget: finished, and running."""

    done: int
    running: int


def _count(by_name: Mapping[str, int]) -> Count:
    """The count, from how many counted trials are in each state (by TrialState name)."""
    done = sum(by_name.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL"))
    return Count(done, by_name.get("RUNNING", 0))


def superseded(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the failed attempts that were run again (after a dead worker or a stop),
    and of trials given back unrun; none of them counts against the budget."""
    return _superseded_by((t.number, t.system_attrs) for t in trials)


def _superseded_by(system_attrs: Iterable[tuple[int, Mapping[str, Any]]]) -> set[int]:
    out: set[int] = set()
    for number, attrs in system_attrs:
        out.update(attrs.get(_RETRIED, ()), attrs.get(_INTERRUPTED, ()))
        if attrs.get(_GIVEN_BACK):
            out.add(number)
    return out


def _left_out(attrs: list[tuple[int, dict[str, Any]]], unbeaten: set[int]) -> set[int]:
    return _superseded_by(attrs) | unbeaten


def counts(trials: list[optuna.trial.FrozenTrial]) -> Count:
    """The count among ``trials`` (read by the caller; their heartbeats are not: a RUNNING
    trial another client asked for counts here as running)."""
    left_out = superseded(trials)
    states: dict[str, int] = {}
    for t in trials:
        if t.number not in left_out:
            states[t.state.name] = states.get(t.state.name, 0) + 1
    return _count(states)


def finished(study: optuna.Study) -> int:
    """The study's finished trials that count against the budget."""
    return counts(study.get_trials(deepcopy=False))[0]


def count(study: optuna.Study, storage: SweepStorage) -> Count:
    """The study's count, made by the server in narrow queries whatever the study's length
    (:meth:`sweep.rdb.fast.FastPath.count_states`): the claim's check, under the study lock."""
    states = storage.count_states(_optuna.study_id(study), SUPERSEDING_ATTRS, _left_out)
    return _count({state.name: n for state, n in states.items()})


# --------------------------------------------------------------------------- claiming


class Claim:
    """The study lock, held from the budget's check until a trial is claimed.

    ``with Claim(study, storage, budget) as claim:`` takes the lock and counts; then
    :attr:`spent` (stop), :attr:`room` (claim a trial, and call :meth:`release` once it is
    claimed) or neither (other workers' trials hold the rest: wait for them to end, or go
    stale). The lock is released at the latest when the block ends.
    """

    def __init__(self, study: optuna.Study, storage: SweepStorage, budget: int) -> None:
        self.study, self.storage, self.budget = study, storage, budget
        self.count = Count(0, 0)
        self._held = Held()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Claim:
        self._held = self._stack.enter_context(study_lock(self.storage, self.study.study_name))
        self.count = count(self.study, self.storage)
        done, running = self.count
        if done < self.budget <= done + running:
            # No room: fail dead workers' trials, whose RUNNING state holds budget. (With
            # room, Optuna fails them itself before each trial it runs.)
            fail_stale(self.study)
            self.count = count(self.study, self.storage)
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    @property
    def spent(self) -> bool:
        return self.count.done >= self.budget

    @property
    def room(self) -> bool:
        return sum(self.count) < self.budget

    def release(self) -> None:
        """The trial is claimed, with its first heartbeat: let other workers in."""
        self._stack.close()

    def over_budget(self, number: int) -> bool:
        """Whether trial ``number``, claimed under this lock, was claimed past the budget
        (call after :meth:`release`). Only possible when the lock was lost between the check
        and the claim (the server restarted): then another worker may have claimed the same
        slot, and the later trial gives way."""
        if not self._held.lost:
            return False
        with study_lock(self.storage, self.study.study_name):
            trials = self.study.get_trials(deepcopy=False)
        left_out = superseded(trials)
        counted = sorted(
            t.number for t in trials if t.number not in left_out and t.state.name != "WAITING"
        )
        return number in counted[self.budget :]


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark a trial claimed past the budget: it is never run and never counts. A planned
    trial (the baseline, a grid point) is enqueued again: it is never dropped."""
    records.write_failure(trial, GIVEN_BACK)
    trial.storage.set_trial_system_attr(_optuna.trial_id(trial), _GIVEN_BACK, True)
    if records.planned_params(trial) is not None:
        requeue(study, _frozen(study, trial))
    log.warning("trial %d: %s", trial.number, GIVEN_BACK)


# --------------------------------------------------------------------------- requeues


def fail_stale(study: optuna.Study) -> None:
    """Fail (and requeue, by the storage's callback) trials whose heartbeat stopped."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _frozen(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[trial.number]  # numbers index the trial list


def requeue(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial) -> None:
    """Enqueue a trial cut short by a stop again, with its params, as a WAITING copy linked
    to it as Optuna links a dead worker's retry: its failed run spends no budget and no
    retry (those are kept for dead workers)."""
    import optuna

    frozen = trial if isinstance(trial, optuna.trial.FrozenTrial) else _frozen(study, trial)
    attrs = {"failed_trial": frozen.number, _RETRIED: [], **frozen.system_attrs}
    attrs[_INTERRUPTED] = [*frozen.system_attrs.get(_INTERRUPTED, []), frozen.number]
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs=frozen.user_attrs,
            system_attrs=attrs,
        )
    )


def requeue_trials_of(
    study: optuna.Study, storage: optuna.storages.BaseStorage, workers: set[str]
) -> int:
    """Fail and enqueue again the RUNNING trials of ``workers``, killed because they did not
    stop when asked (or caught by a stop between their claim and their start); return how
    many. Like a stopped worker's, their runs spend no retry."""
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
        requeue(study, t)
        requeued += 1
    return requeued
