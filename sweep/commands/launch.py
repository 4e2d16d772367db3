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
import sys
from typing import TYPE_CHECKING

from sweep import budget, data, devices, models, records, recycle, runner, study, tables
from sweep.commands import _options
from sweep.run import RunOptions
from sweep.space import planned
from sweep.stop import StopEvent
from sweep.storage import default_url, redact

if TYPE_CHECKING:
    from sweep.devices import Placement

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

log = logging.getLogger("sweep")

HELP = "create or resume a study and run its trials, with one or many workers"
DESCRIPTION = "Create or resume an Optuna study of Keras CNNs and run its trials."


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


# --------------------------------------------------------------------------- dry run


def _dry_run(run: RunOptions, placements: list[Placement]) -> None:
    spec = run.spec
    run, arrays = runner.prepare(run)  # an own dataset read, own families built once
    print(f"study      {run.study_name}: {spec.description}")
    print(f"file       {spec.source}")
    print(f"dataset    {spec.dataset} (seed {spec.seed}, validation {spec.validation_split:g})")
    if arrays is not None:
        shape, classes = arrays.input_shape, arrays.num_classes
        names = ", ".join(arrays.class_names[:12]) + (", ..." if classes > 12 else "")
        print(f"data       {len(arrays.x_train)} train / {len(arrays.x_test)} test images "
              f"of {shape}, {classes} classes: {names}")  # fmt: skip
    else:
        shape, classes = data.DATA_INFO[spec.dataset]
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
    devices.configure(run.keras_backend)
    print(f"backend    {run.keras_backend}, precision {spec.precision}")
    models.importable(run.code_dir)
    for family in families:
        params = models.probe_params(spec, family)
        model = models.build(params, input_shape=shape, num_classes=classes, compile=False)
        model.summary()
        print(f"{family}: {model.count_params():,} parameters")


# --------------------------------------------------------------------------- the command


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    url = args.storage or default_url()
    the_run = _options.run_from_file(args, url)
    where = runner.placements(
        workers=args.workers,
        gpus=args.gpus,
        trials_per_gpu=args.trials_per_gpu,
        gpu_memory=args.gpu_memory,
        oversubscribe=args.oversubscribe,
    )
    if args.dry_run:  # touches no storage: the URL is not even checked
        _dry_run(the_run, where)
        return 0
    _options.storage_url(args)  # checked now, not for a dry run
    the_run, arrays = runner.prepare(the_run)
    study.check_resumable(the_run)
    most = recycle.every() if len(where) == 1 else None
    launched = runner.launch(
        the_run, where, stop=stop, progress=not args.quiet, arrays=arrays, most=most
    )
    the_study = launched.study
    done = budget.finished(the_study)
    if not launched.interrupted:  # the same command again, if due: it resumes
        recycle.replace_if_due(most, launched.ran, done, the_run.budget)
    print(tables.format_table(tables.rows(records.read_all(the_study))))
    print(f"\nstudy {the_study.study_name!r} in {redact(url)}")
    if launched.interrupted:
        print("interrupted: running trials were requeued; run the same command to resume")
        return 130
    for line in launched.failed:
        print(line, file=sys.stderr)
    if done < the_run.budget:
        print(f"the study has {done} of {the_run.budget} trials; run the same command to resume")
        return 1
    return 0
