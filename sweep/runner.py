"""Running a study: check what it needs, then take its trials here or in worker processes.

The composition root below the commands and the Python API (:mod:`sweep.api`):
:func:`prepare` reads an own dataset and builds every family of one's own once, before
anything is written; :func:`serve` takes trials in this process (``sweep worker``, and a
launch with one worker); :func:`launch` creates the study and starts one ``sweep worker``
per placement, showing their progress from the storage.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sweep import budget, data, devices, loop, models, records, study
from sweep.artifacts import Publisher, StudyRefresher, open_store
from sweep.errors import Interrupted, UserError
from sweep.run import RunOptions
from sweep.settings import current
from sweep.stop import StopEvent
from sweep.storage import open_storage
from sweep.trial import Objective

if TYPE_CHECKING:
    import optuna

    from sweep.devices import Placement
    from sweep.sources import Arrays

__all__ = ["Launched", "Progress", "launch", "placements", "prepare", "serve"]

STOP_GRACE_S = 12  # workers get this long to requeue their trials after Ctrl-C or SIGTERM

log = logging.getLogger("sweep")


class Progress:
    """The progress bar, fed from the storage: one read serves the count and the best."""

    def __init__(self, the_study: optuna.Study, total: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self.study = the_study
        self.bar = tqdm(
            total=total,
            initial=min(budget.finished(the_study), total),
            desc=the_study.study_name,
            unit="trial",
            disable=quiet,
            dynamic_ncols=True,
        )

    def __call__(self, *_: object) -> None:
        trials = self.study.get_trials(deepcopy=False)
        done = min(budget.counts(trials)[0], self.bar.total)
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
    create: bool = True,
    progress: bool = False,
    arrays: Arrays | None = None,
    most: int | None = None,
) -> tuple[optuna.Study, int, bool]:
    """Open the run's study and take its trials until the budget is spent (or ``most`` ran
    here: see :mod:`sweep.recycle`).

    The data and the artifact folder are checked before the storage is written; TensorFlow
    (or the run's Keras backend) is imported then, quietly, with this worker's device
    settings.

    Args:
        create: Store the run in the study and enqueue its plan (the creator does this).
        progress: Show a progress bar.
        arrays: The run's own dataset, if the caller has read it (:func:`prepare`).

    Returns:
        The study, how many trials ran here, and whether a stop ended the loop.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if arrays is None:
        run, arrays = run.read_data()  # bad data files are refused before TensorFlow's import
    splits = run.load_data(arrays)
    for name in run.spec.own_families:  # one that this host cannot import: refused, not failed
        models.family(name, search_path=run.code_dir)
    store = open_store(run.artifacts)
    devices.configure(run.keras_backend)
    storage = open_storage(run.url, check=False)
    the_study = study.open_study(run, storage=storage, create=create)
    if create:
        run.keep_data(arrays)  # where every other worker reads an own dataset
        study.set_data_info(the_study, splits)
    publish = Publisher(
        store,
        storage,
        keep=run.spec.keep_models,
        classes=splits.class_names,
        input_shape=splits.input_shape,
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
            the_study,
            objective,
            storage=storage,
            budget=run.budget,
            stop=stop,
            on_trial_end=hooks,
            most=most,
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


# --------------------------------------------------------------------------- checks


def prepare(
    run: RunOptions, *, arrays: Arrays | None = None, probe: bool = True
) -> tuple[RunOptions, Arrays | None]:
    """Read the run's own dataset (if it has one) and build each family of one's own once,
    so that what would fail every trial is refused before anything is written.

    Returns:
        The run with its data's content hash, and the own dataset's arrays (None for a
        built-in dataset).

    Raises:
        UserError: bad data files, or a family that cannot be built on this data.
    """
    if arrays is None:
        run, arrays = run.read_data()
    if arrays is not None:
        data.check_subset(
            run.spec.dataset, run.subset, run.spec.validation_split, most=len(arrays.x_train)
        )
        shape, classes = arrays.input_shape, arrays.num_classes
    else:
        shape, classes = data.DATA_INFO[run.spec.dataset]
    if probe and run.spec.own_families:
        devices.configure(run.keras_backend)
        models.check_families(
            run.spec, input_shape=shape, num_classes=classes, search_path=run.code_dir
        )
    return run, arrays


# --------------------------------------------------------------------------- workers


def placements(
    *,
    workers: int | None = None,
    gpus: str | None = None,
    trials_per_gpu: int | None = None,
    gpu_memory: int | None = None,
    oversubscribe: bool = False,
) -> list[Placement]:
    """Each worker's device, from ``--workers``, ``--gpus``, ``--trials-per-gpu`` and
    ``--gpu-memory`` (the launch's options, and :func:`sweep.run`'s arguments).

    Raises:
        UserError: options that conflict, or more workers than this machine holds.
    """
    asked = (workers or 1) if gpus is None else (trials_per_gpu or 1)
    if asked > devices.MOST_WORKERS:
        flag = "--workers" if gpus is None else "--trials-per-gpu"
        raise UserError(
            f"{flag} {asked}: one launch starts at most {devices.MOST_WORKERS} workers; "
            "start `sweep worker --study NAME` on other hosts for more"
        )
    if gpus is None:
        for flag, value in (
            ("--trials-per-gpu", trials_per_gpu),
            ("--gpu-memory", gpu_memory),
        ):
            if value is not None:
                raise UserError(f"{flag} needs --gpus; add --gpus 0 (or all), or drop {flag}")
        if not oversubscribe:
            devices.check_capacity(workers or 1, flag=f"--workers {workers}")
        return devices.plan(workers=workers or 1, gpus=None)
    if workers is not None:
        raise UserError(
            "--workers conflicts with --gpus: with GPUs there is one worker per GPU "
            "(times --trials-per-gpu); drop --workers"
        )
    if gpu_memory is not None and gpu_memory > 2**20:
        raise UserError(f"--gpu-memory {gpu_memory}: at most {2**20} MB (1 TiB) per worker")
    per_gpu = trials_per_gpu or 1
    ids = devices.parse_gpus(gpus, devices.visible_gpus())
    if not oversubscribe:  # each GPU worker is a host process too
        devices.check_capacity(len(ids) * per_gpu, flag=f"--gpus {gpus}")
    return devices.plan(
        workers=len(ids) * per_gpu, gpus=ids, per_gpu=per_gpu, gpu_memory_mb=gpu_memory
    )


@dataclass(frozen=True)
class Launched:
    """How a launch ended: the study, whether a stop ended it, and each failed worker."""

    study: optuna.Study
    interrupted: bool
    failed: tuple[str, ...] = ()
    ran: int = 0  # trials run in this process (one placement)


def launch(
    run: RunOptions,
    placements: list[Placement],
    *,
    stop: StopEvent,
    progress: bool = True,
    arrays: Arrays | None = None,
    most: int | None = None,
) -> Launched:
    """Create or resume the run's study and spend its budget: in this process with one
    placement (at most ``most`` trials: see :mod:`sweep.recycle`), else with one ``sweep
    worker`` process per placement.

    ``run`` and ``arrays`` come from :func:`prepare`.
    """
    if len(placements) == 1:
        os.environ.update(placements[0].env)  # before TensorFlow starts
        the_study, ran, interrupted = serve(
            run, stop=stop, progress=progress, arrays=arrays, most=most
        )
        return Launched(the_study, interrupted, ran=ran)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = run.load_data(arrays)  # bad files refused before anything is written
    open_store(run.artifacts)
    storage = open_storage(run.url, check=False)
    the_study = study.open_study(run, storage=storage)
    run.keep_data(arrays)  # where every worker reads an own dataset, before any starts
    study.set_data_info(the_study, splits)
    interrupted, failed = _supervise(
        the_study, storage, run, placements, quiet=not progress, stop=stop
    )
    return Launched(the_study, interrupted, tuple(failed))


def _worker_env(run: RunOptions, p: Placement) -> dict[str, str]:
    """What a worker started here needs besides the study's name: the storage URL (not on
    its command line, where ``ps`` would show its password), this host's folders, and its
    device."""
    mine = current()
    theirs = replace(
        mine,
        worker_label=f"worker {p.index} ({p.describe()})",
        storage=run.url,
        artifacts=run.artifacts,
        log_level=mine.worker_log_level,
        backend=run.keras_backend,
        data_dir=mine.data_dir if run.data_dir is None else run.data_dir.absolute(),
    )
    return {**os.environ, **theirs.to_env(), **p.env}  # the placement: its device


def _supervise(
    the_study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    run: RunOptions,
    placements: list[Placement],
    *,
    quiet: bool,
    stop: StopEvent,
) -> tuple[bool, list[str]]:
    """Start one ``sweep worker`` per placement and wait for them all.

    Returns whether the run was interrupted, and a line for each worker that failed.
    """
    procs: list[subprocess.Popen[bytes]] = []
    progress = None
    interrupted = False
    # The name twice: a name that looks like a path must not be taken for a study file.
    name = run.study_name
    argv = [sys.executable, "-m", "sweep", "worker", "--study", name, "--study-name", name]
    try:
        for p in placements:
            # Own session: a terminal's Ctrl-C reaches this process only, which passes it on.
            procs.append(subprocess.Popen(argv, env=_worker_env(run, p), start_new_session=True))
        log.info("started %d workers: %s", len(procs), ", ".join(p.describe() for p in placements))
        progress = Progress(the_study, run.budget, quiet=quiet)
        while any(proc.poll() is None for proc in procs):
            stop.wait(1)
            progress()
        progress()
    except KeyboardInterrupt:
        interrupted = True
        stop.rearm()  # a second Ctrl-C while they stop kills them at once
        _stop(the_study, storage, procs)
    except BaseException:
        _stop(the_study, storage, procs)  # never leave workers running on their own
        raise
    finally:
        if progress is not None:
            progress.close()
    failed = [
        f"worker {p.index} ({p.describe()}) exited with code {proc.returncode}"
        for p, proc in zip(placements, procs, strict=True)
        if proc.returncode not in (0, 130) and not interrupted
    ]
    return interrupted, failed


def _stop(
    the_study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """Ask every worker to requeue its trial and stop; kill those that take too long, and
    requeue their trials here. A second Ctrl-C during the wait kills them at once."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        for proc in live:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    killed = {loop.worker_id(proc.pid) for proc in live if proc.poll() is None}
    for proc in live:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if killed:
        budget.requeue_trials_of(the_study, storage, killed)
