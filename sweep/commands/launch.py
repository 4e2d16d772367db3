"""``sweep launch``: create or resume a study and run its trials with N workers.

Everything the user typed is checked before anything is written: the study file, the options,
the devices, the data and the storage URL. With one worker the trials run in this process;
with more (``--workers``, ``--gpus``) this process creates the study, starts ``sweep worker``
once per worker with its device placed (:mod:`sweep.devices`), shows their progress from the
storage, and prints the comparison table when they are done. A worker it starts gets the
study's name on its command line and the rest from the study itself and its environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from sweep import devices, loop, models, records, study, tables
from sweep.artifacts import open_store
from sweep.commands import _options
from sweep.commands._serve import Progress, serve
from sweep.errors import UserError
from sweep.run import RunOptions
from sweep.space import planned
from sweep.stop import StopEvent
from sweep.storage import default_url, open_storage, redact

if TYPE_CHECKING:
    import optuna

    from sweep.devices import Placement

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

log = logging.getLogger("sweep")

HELP = "create or resume a study and run its trials, with one or many workers"
DESCRIPTION = "Create or resume an Optuna study of Keras CNNs and run its trials."

STOP_GRACE_S = 12  # workers get this long to requeue their trials after Ctrl-C or SIGTERM


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_run_options(
        p,
        study_help="study name from studies/ (e.g. quickstart, exp3) or a path to a .toml file",
    )
    p.add_argument(
        "--workers",
        type=_options.positive,
        default=None,
        metavar="N",
        help="worker processes on this machine's CPU (default: 1); with --gpus, "
        "one per GPU times --trials-per-gpu instead",
    )
    p.add_argument(
        "--gpus",
        default=None,
        metavar="IDS",
        help="GPUs to use, e.g. 0,1,2,3 or all; each worker sees one (CUDA_VISIBLE_DEVICES)",
    )
    p.add_argument(
        "--trials-per-gpu",
        type=_options.positive,
        default=None,
        metavar="K",
        help="workers packed onto each GPU, with memory growth (default: 1; needs --gpus)",
    )
    p.add_argument(
        "--gpu-memory",
        type=_options.positive,
        default=None,
        metavar="MB",
        help="hard GPU memory limit per worker instead of memory growth (needs --gpus)",
    )
    p.add_argument(
        "--oversubscribe",
        action="store_true",
        help="start more workers than this machine holds (at most "
        f"{devices.WORKERS_PER_CORE} per core, about {devices.WORKER_MEMORY_GIB:g} GiB of free "
        "memory each)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the search space and each family's model.summary(); "
        "train nothing, write nothing",
    )


# --------------------------------------------------------------------------- placement


def _placements(args: argparse.Namespace) -> list[Placement]:
    """Each worker's device, from --workers, --gpus, --trials-per-gpu and --gpu-memory."""
    if args.gpus is None:
        for flag, value in (
            ("--trials-per-gpu", args.trials_per_gpu),
            ("--gpu-memory", args.gpu_memory),
        ):
            if value is not None:
                raise UserError(f"{flag} needs --gpus; add --gpus 0 (or all), or drop {flag}")
        if not args.oversubscribe:
            devices.check_capacity(args.workers or 1, flag=f"--workers {args.workers}")
        return devices.plan(workers=args.workers or 1, gpus=None)
    if args.workers is not None:
        raise UserError(
            "--workers conflicts with --gpus: with GPUs there is one worker per GPU "
            "(times --trials-per-gpu); drop --workers"
        )
    per_gpu = args.trials_per_gpu or 1
    gpus = devices.parse_gpus(args.gpus, devices.visible_gpus())
    if not args.oversubscribe:  # each GPU worker is a host process too
        devices.check_capacity(len(gpus) * per_gpu, flag=f"--gpus {args.gpus}")
    return devices.plan(
        workers=len(gpus) * per_gpu, gpus=gpus, per_gpu=per_gpu, gpu_memory_mb=args.gpu_memory
    )


# --------------------------------------------------------------------------- dry run


def _dry_run(run: RunOptions, placements: list[Placement]) -> None:
    spec = run.spec
    print(f"study      {run.study_name}: {spec.description}")
    print(f"file       {spec.source}")
    print(f"dataset    {spec.dataset} (seed {spec.seed}, validation {spec.validation_split:g})")
    if spec.sampling_seed != spec.seed:
        print(f"sampler    seed {spec.sampling_seed}")
    print(f"budget     {run.budget} trials, {len(planned(spec))} planned (baseline and grid)")
    print(f"sampler    {spec.sampler.name}    pruner {spec.pruner.name}")
    print(f"workers    {len(placements)}: " + ", ".join(p.describe() for p in placements))
    print(f"baseline   {spec.baseline}")
    print("space")
    for d in spec.space:
        print(f"  {d.name:<14} {d.describe()}")
    families = dict.fromkeys([spec.baseline.family, *spec.families])
    fixed = {d.name: d.choices[0] for d in spec.space if d.kind == "fixed" and d.name != "family"}
    devices.configure(run.keras_backend)
    print(f"backend    {run.keras_backend}, precision {spec.precision}")
    for family in families:
        params = replace(spec.baseline, **fixed, family=family)
        model = models.build(params, compile=False)
        model.summary()
        print(f"{family}: {model.count_params():,} parameters")


# --------------------------------------------------------------------------- workers


def _worker_env(run: RunOptions, p: Placement) -> dict[str, str]:
    """What a worker started here needs besides the study's name: the storage URL (not on
    its command line, where ``ps`` would show its password), this host's folders, and its
    device."""
    env = {
        **os.environ,
        **p.env,
        "SWEEP_WORKER_LABEL": f"worker {p.index} ({p.describe()})",
        "SWEEP_WORKER_INDEX": str(p.index),
        "SWEEP_STORAGE": run.url,
        "SWEEP_ARTIFACTS": str(run.artifacts),
        "SWEEP_LOG_LEVEL": os.environ.get("SWEEP_WORKER_LOG_LEVEL", "WARNING"),
        devices.BACKEND_ENV: run.keras_backend,
    }
    if run.data_dir is not None:
        env["SWEEP_DATA_DIR"] = str(run.data_dir.absolute())
    return env


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
        loop.requeue_trials_of(the_study, storage, killed)


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    url = args.storage or default_url()
    the_run = _options.run_from_file(args, url)
    placements = _placements(args)
    if args.dry_run:  # touches no storage: the URL is not even checked
        _dry_run(the_run, placements)
        return 0
    _options.storage_url(args)  # checked now, not for a dry run
    study.check_resumable(the_run)
    failed: list[str] = []
    if len(placements) == 1:
        os.environ.update(placements[0].env)  # before TensorFlow starts
        the_study, _, interrupted = serve(the_run, stop=stop, progress=not args.quiet)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The data and the artifact folder are checked before the storage is written.
        the_run.load_data()
        open_store(the_run.artifacts)
        storage = open_storage(url, check=False)
        the_study = study.open_study(the_run, storage=storage)
        interrupted, failed = _supervise(
            the_study, storage, the_run, placements, quiet=args.quiet, stop=stop
        )
    print(tables.format_table(tables.rows(records.read_all(the_study))))
    print(f"\nstudy {the_study.study_name!r} in {redact(url)}")
    if interrupted:
        print("interrupted: running trials were requeued; run the same command to resume")
        return 130
    for line in failed:
        print(line, file=sys.stderr)
    done = loop.finished(the_study)
    if done < the_run.budget:
        print(f"the study has {done} of {the_run.budget} trials; run the same command to resume")
        return 1
    return 0
