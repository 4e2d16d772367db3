"""``sweep worker``: one worker process; take trials of a study until its budget is spent.

What ``sweep launch`` starts once per CPU share or GPU slot, and what docker-compose runs on
each GPU host. Any number of workers, on any number of hosts, share one study through its
storage. A worker reads the study file, the data settings, the budget and the epoch cap from
the study, so ``sweep worker --study NAME --storage URL`` needs no file on its host; given a
study file for a study that does not exist yet, it creates the study from it.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from sweep import budget, recycle, runner, study
from sweep.commands import _options
from sweep.config import DATASETS, find_study_file, names_a_file, resolve_dataset
from sweep.errors import UserError
from sweep.run import RunOptions
from sweep.runner import serve
from sweep.stop import StopEvent

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

log = logging.getLogger("sweep")

HELP = "one worker: take trials of a study until its budget is spent (any host)"
DESCRIPTION = (
    "One worker: take trials of a study until its budget is spent, then exit 0. Start as "
    "many as you like, on any host that reaches the storage; each reads the study's settings "
    "from the storage."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_run_options(
        p,
        study_help="the study's name in the storage; or, to create it, a study name from "
        "studies/ or a path to a .toml file",
    )


def _run_options(args: argparse.Namespace, url: str) -> tuple[RunOptions, bool]:
    """The run, and whether this worker creates the study. The study file is read only when
    the study does not exist yet."""
    name = args.study_name or (
        find_study_file(args.study).stem if names_a_file(args.study) else args.study
    )
    stored = study.peek(url, name)
    if stored is None or stored.file_text is None:
        the_run = _options.run_from_file(args, url)  # this worker creates the study
        study.check_against(the_run, stored)
        return the_run, True
    the_run = study.stored_run(
        url,
        name,
        data_dir=args.data_dir,
        artifacts=_options.artifacts_dir(args, url),
        budget=args.n_trials,
        max_epochs=args.max_epochs,
        stored=stored,
        backend=args.backend,
    )
    spec = the_run.spec
    if args.dataset is not None and not spec.builtin_data and args.dataset not in DATASETS:
        # The study's own data at this host's path: its content hash decides (run.read_data).
        the_run = replace(
            the_run, spec=replace(spec, dataset=resolve_dataset(args.dataset, Path.cwd()))
        )
        spec = the_run.spec
    asked = {
        "dataset": (
            None if args.dataset is None or not spec.builtin_data else args.dataset,
            spec.dataset,
        ),
        "seed": (args.seed, spec.seed),
        "sampler-seed": (args.sampler_seed, spec.sampling_seed),
        "subset": (args.subset, the_run.subset),
    }
    for key, (value, have) in asked.items():
        if value is not None and value != have:
            raise UserError(
                f"study {name!r} runs with {key} {have}, not {value}; drop --{key}, or pass "
                "--study-name NEW for a new study"
            )
    return the_run, False


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    url = _options.storage_url(args)
    the_run, create = _run_options(args, url)
    arrays = None
    if create:  # this worker makes the study: its data and families checked first, as launch's
        the_run, arrays = runner.prepare(the_run)
    most = recycle.every()
    the_study, ran, interrupted = serve(the_run, stop=stop, create=create, arrays=arrays, most=most)
    name = the_study.study_name
    if not interrupted:
        recycle.replace_if_due(most, ran, budget.finished(the_study), the_run.budget)
    if interrupted:
        log.warning(
            "interrupted: the trial it was running, if any, was requeued; study %r has %d of "
            "%d trials",
            name,
            budget.finished(the_study),
            the_run.budget,
        )
        return 130
    log.info("study %r: budget of %d spent; this worker ran %d", name, the_run.budget, ran)
    return 0
