"""``sweep report``: a study's report, read from the storage: Markdown, a CSV of every trial
with the baseline marked, and plots (PNG and interactive HTML) drawn against the baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep import api
from sweep.commands import _options
from sweep.stop import StopEvent

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "write a study's report: Markdown, a CSV of every trial, plots against the baseline"
DESCRIPTION = (
    "Write a study's report: Markdown, a CSV of every trial with the baseline marked, and "
    "plots (PNG and interactive HTML) drawn against the baseline."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_existing_study_options(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    for path in api.report(
        args.study, out=args.out, storage=_options.storage_url(args, write=False)
    ):
        print(path)
    return 0
