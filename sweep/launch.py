"""``python -m sweep.launch``: create or resume a study and run its trials with N workers.

Everything the user typed is checked before anything is written: the study file, the options,
the devices, the data and the storage URL. Bad input ends with one line on stderr and exit
code 2. With one worker the trials run in this process; with more (``--workers``, ``--gpus``)
this process creates the study, starts ``python -m sweep.worker`` once per worker with its
device placed (:mod:`sweep.devices`), shows their progress from the storage, and prints the
comparison table when they are done.
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
from typing import TYPE_CHECKING, Any

from sweep import cli
from sweep.config import StudySpec
from sweep.errors import UserError
from sweep.storage import redact
from sweep.worker import counts, finished, requeue_trials_of, worker_id

if TYPE_CHECKING:
    import optuna

    from sweep.devices import Placement

__all__ = ["main", "parser"]

log = logging.getLogger("sweep")

STOP_GRACE_S = 12  # workers get this long to requeue their trials after Ctrl-C or SIGTERM


def parser() -> argparse.ArgumentParser:
    """The CLI; its ``--help`` is the README's CLI reference."""
    p = cli.Parser(
        prog="python -m sweep.launch",
        description="Create or resume an Optuna study of Keras CNNs and run its trials.",
    )
    cli.add_study_options(p)
    p.add_argument(
        "--workers",
        type=cli.positive,
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
        type=cli.positive,
        default=None,
        metavar="K",
        help="workers packed onto each GPU, with memory growth (default: 1; needs --gpus)",
    )
    p.add_argument(
        "--gpu-memory",
        type=cli.positive,
        default=None,
        metavar="MB",
        help="hard GPU memory limit per worker instead of memory growth (needs --gpus)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the search space and each family's model.summary(); "
        "train nothing, write nothing",
    )
    return p


# --------------------------------------------------------------------------- placement


def _placements(args: argparse.Namespace) -> list[Placement]:
    """Each worker's device, from --workers, --gpus, --trials-per-gpu and --gpu-memory."""
    from sweep import devices

    if args.gpus is None:
        for flag, value in (
            ("--trials-per-gpu", args.trials_per_gpu),
            ("--gpu-memory", args.gpu_memory),
        ):
            if value is not None:
                raise UserError(f"{flag} needs --gpus; add --gpus 0 (or all), or drop {flag}")
        return devices.plan(workers=args.workers or 1, gpus=None)
    if args.workers is not None:
        raise UserError(
            "--workers conflicts with --gpus: with GPUs there is one worker per GPU "
            "(times --trials-per-gpu); drop --workers"
        )
    per_gpu = args.trials_per_gpu or 1
    gpus = devices.parse_gpus(args.gpus, devices.visible_gpus())
    return devices.plan(
        workers=len(gpus) * per_gpu, gpus=gpus, per_gpu=per_gpu, gpu_memory_mb=args.gpu_memory
    )


# --------------------------------------------------------------------------- dry run


def _dry_run(spec: StudySpec, budget: int, placements: list[Placement]) -> None:
    from sweep import models
    from sweep.space import planned

    print(f"study      {spec.name}: {spec.description}")
    print(f"file       {spec.source}")
    print(f"dataset    {spec.dataset} (seed {spec.seed}, validation {spec.validation_split:g})")
    print(f"budget     {budget} trials, {len(planned(spec))} planned (baseline and grid)")
    print(f"sampler    {spec.sampler.name}    pruner {spec.pruner.name}")
    print(f"workers    {len(placements)}: " + ", ".join(p.describe() for p in placements))
    print(f"baseline   {spec.baseline}")
    print("space")
    for d in spec.space:
        print(f"  {d.name:<14} {d.describe()}")
    families = dict.fromkeys([spec.baseline.family, *spec.families])
    fixed = {d.name: d.choices[0] for d in spec.space if d.kind == "fixed" and d.name != "family"}
    for family in families:
        params = replace(spec.baseline, **fixed, family=family)
        model = models.build(params, compile=False)
        model.summary()
        print(f"{family}: {model.count_params():,} parameters")


# --------------------------------------------------------------------------- run


def _progress(study: optuna.Study, budget: int, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=budget,
        initial=min(finished(study), budget),
        desc=study.study_name,
        unit="trial",
        disable=quiet,
        dynamic_ncols=True,
    )


def _show_progress(bar: Any, study: optuna.Study) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)  # one read serves both numbers
    done = min(counts(trials)[0], bar.total)
    if done > bar.n:
        bar.update(done - bar.n)
    values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if values:
        bar.set_postfix(best_val=f"{max(values):.3f}", refresh=False)


def _supervise(
    study: optuna.Study,
    argv: list[str],
    placements: list[Placement],
    *,
    storage: str,
    budget: int,
    quiet: bool,
) -> tuple[bool, list[str]]:
    """Start one ``sweep.worker`` per placement and wait for them all.

    Returns whether the run was interrupted, and a line for each worker that failed.
    """
    procs: list[subprocess.Popen[bytes]] = []
    bar = None
    interrupted = False
    try:
        for p in placements:
            env = {
                **os.environ,
                **p.env,
                "SWEEP_WORKER_LABEL": f"worker {p.index} ({p.describe()})",
                "SWEEP_WORKER_INDEX": str(p.index),
                "SWEEP_STORAGE": storage,  # not in argv, where `ps` would show its password
                "SWEEP_LOG_LEVEL": os.environ.get("SWEEP_WORKER_LOG_LEVEL", "WARNING"),
            }
            # Own session: a terminal's Ctrl-C reaches this process only, which passes it on.
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sweep.worker", *argv], env=env, start_new_session=True
                )
            )
        log.info("started %d workers: %s", len(procs), ", ".join(p.describe() for p in placements))
        bar = _progress(study, budget, quiet)
        while any(proc.poll() is None for proc in procs):
            time.sleep(1)
            _show_progress(bar, study)
        _show_progress(bar, study)
    except KeyboardInterrupt:
        interrupted = True
        _stop(study, procs)
    except BaseException:
        _stop(study, procs)  # never leave workers running on their own
        raise
    finally:
        if bar is not None:
            bar.close()
    failed = [
        f"worker {p.index} ({p.describe()}) exited with code {proc.returncode}"
        for p, proc in zip(placements, procs, strict=True)
        if proc.returncode not in (0, 130) and not interrupted
    ]
    return interrupted, failed


def _stop(study: optuna.Study, procs: list[subprocess.Popen[bytes]]) -> None:
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
    killed = {worker_id(proc.pid) for proc in live if proc.poll() is None}
    for proc in live:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if killed:
        requeue_trials_of(study, killed)


def _main(args: argparse.Namespace) -> int:
    from sweep import study as studies
    from sweep.space import planned

    spec = cli.load_spec(args)
    placements = _placements(args)
    budget = studies.budget(spec, args.n_trials, len(planned(spec)))
    if args.dry_run:
        _dry_run(spec, budget, placements)
        return 0
    url, _ = cli.check_storage(spec, args)
    if len(placements) == 1:
        os.environ.update(placements[0].env)  # before TensorFlow starts
    study, splits, store = cli.open_run(spec, args, url, budget=budget, worker=None)

    from sweep.report import format_table, rows

    failed: list[str] = []
    if len(placements) == 1:
        interrupted = _run_here(study, spec, args, budget, splits, store)
    else:
        del splits, store  # each worker loads its own copy
        argv = [*cli.study_argv(args, spec), "--n-trials", str(budget)]
        interrupted, failed = _supervise(
            study, argv, placements, storage=url, budget=budget, quiet=args.quiet
        )
    print(format_table(rows(study)))
    print(f"\nstudy {study.study_name!r} in {redact(url)}")
    if interrupted:
        print("interrupted: running trials were requeued; run the same command to resume")
        return 130
    for line in failed:
        print(line, file=sys.stderr)
    done = finished(study)
    if done < budget:
        print(f"the study has {done} of {budget} trials; run the same command to resume")
        return 1
    return 0


def _run_here(
    study: optuna.Study,
    spec: StudySpec,
    args: argparse.Namespace,
    budget: int,
    splits: Any,
    store: Any,
) -> bool:
    """Run the trials in this process, one worker; return whether it was interrupted."""
    from sweep import devices
    from sweep.objective import Objective
    from sweep.worker import run_trials

    devices.configure_tensorflow()
    objective = Objective(spec, splits, max_epochs=args.max_epochs, artifacts=store)
    bar = _progress(study, budget, args.quiet)
    try:
        run_trials(
            study, objective, budget=budget, on_trial_end=lambda _: _show_progress(bar, study)
        )
    except KeyboardInterrupt:
        return True
    finally:
        bar.close()
    return False


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return cli.run_main(parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())
