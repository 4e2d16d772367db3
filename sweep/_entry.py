"""The first code ``python -m sweep`` and ``python -m sweep.X`` run.

Until a command installs its stop event, Ctrl-C or SIGTERM ends the process at once and
quietly, exit code 130: no trial can be running yet. A launcher stopping workers that are
still importing their modules sends them exactly that, and they would print tracebacks.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ["run"]


def _quietly(signum: int, frame: FrameType | None) -> None:
    sys.exit(130)


def run(command: str | None = None) -> int:
    """``sweep`` (no ``command``) or ``python -m sweep.COMMAND``; returns the exit code."""
    signal.signal(signal.SIGINT, _quietly)
    signal.signal(signal.SIGTERM, _quietly)
    from sweep import cli  # after the handlers: importing the commands takes a while

    return cli.main() if command is None else cli.alias(command)
