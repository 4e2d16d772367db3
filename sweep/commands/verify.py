"""``sweep verify``: does the winner's lead survive a change of random seed?

See :mod:`sweep.verification` for what it trains and how it tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep import api
from sweep.commands import _options
from sweep.stop import StopEvent

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "re-train the baseline and the best trials with fresh seeds: is the lead real?"
DESCRIPTION = (
    "Re-train the baseline and the K best trials R times with fresh seeds; print mean ± 95% "
    "CI and whether each lead over the baseline is significant (Welch's t-test, "
    "Holm-adjusted for the number of trials tested)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_existing_study_options(p)
    p.add_argument("--top", type=_options.positive, default=3, metavar="K", help="best trials (3)")
    p.add_argument(
        "--repeats", type=_options.positive, default=5, metavar="R", help="runs per trial (5; >= 2)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the test (0.05)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="where CIFAR-10 is, as for sweep launch",
    )


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    found = api.verify(
        args.study,
        storage=_options.storage_url(args),
        top=args.top,
        repeats=args.repeats,
        alpha=args.alpha,
        data_dir=args.data_dir,
    )
    print(found)
    if found.interrupted:
        print("interrupted: the runs that finished are kept; run the same command to resume")
        return 130
    return 0
