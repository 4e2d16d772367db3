"""Run a study's trials in this process: what ``sweep worker`` does, and ``sweep launch``
with one worker."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from sweep import devices, loop, records, study
from sweep.artifacts import Publisher, StudyRefresher, open_store
from sweep.errors import Interrupted
from sweep.plots import CIFAR10_CLASSES
from sweep.run import RunOptions
from sweep.stop import StopEvent
from sweep.storage import open_storage
from sweep.trial import Objective

if TYPE_CHECKING:
    import optuna

__all__ = ["Progress", "serve"]

log = logging.getLogger("sweep")


class Progress:
    """The progress bar, fed from the storage: one read serves the count and the best."""

    def __init__(self, the_study: optuna.Study, budget: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self.study = the_study
        self.bar = tqdm(
            total=budget,
            initial=min(loop.finished(the_study), budget),
            desc=the_study.study_name,
            unit="trial",
            disable=quiet,
            dynamic_ncols=True,
        )

    def __call__(self, *_: object) -> None:
        trials = self.study.get_trials(deepcopy=False)
        done = min(loop.counts(trials)[0], self.bar.total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        values = [r.value for r in map(records.read, trials) if r.complete and r.value is not None]
        if values:
            self.bar.set_postfix(best_val=f"{max(values):.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def serve(
    run: RunOptions,
    *,
    stop: StopEvent,
    worker: int | None = None,
    create: bool = True,
    progress: bool = False,
) -> tuple[optuna.Study, int, bool]:
    """Open the run's study and take its trials until the budget is spent.

    The data and the artifact folder are checked before the storage is written; TensorFlow
    (or the run's Keras backend) is imported then, quietly, with this worker's device
    settings.

    Args:
        worker: This worker's index (see :func:`sweep.study.open_study`).
        create: Store the run in the study and enqueue its plan (the creator does this).
        progress: Show a progress bar.

    Returns:
        The study, how many trials ran here, and whether a stop ended the loop.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = run.load_data()  # bad data files are refused before TensorFlow's import
    store = open_store(run.artifacts)
    devices.configure(run.keras_backend)
    storage = open_storage(run.url, check=False)
    the_study = study.open_study(run, storage=storage, worker=worker, create=create)
    publish = Publisher(
        store,
        storage,
        keep=run.spec.keep_models,
        classes=CIFAR10_CLASSES if run.spec.dataset == "cifar10" else (),
    )
    objective = Objective(
        run.spec,
        splits,
        max_epochs=run.max_epochs,
        on_complete=publish,
        stop=stop,
        reuse=functools.partial(study.reusable_baseline, storage, run),
    )
    refresher = StudyRefresher(storage)
    hooks: list[loop.OnTrialEnd] = [refresher]
    bar = None
    if progress:
        bar = Progress(the_study, run.budget, quiet=False)
        hooks.append(bar)
    try:
        ran = loop.run_trials(
            the_study, objective, storage=storage, budget=run.budget, stop=stop, on_trial_end=hooks
        )
    except Interrupted:
        return the_study, 0, True
    finally:
        try:
            refresher.flush()  # the last trials' rows, however the loop ended
        except Exception:
            log.warning("could not rewrite the study's note", exc_info=True)
        if bar is not None:
            bar.close()
    return the_study, ran, False
