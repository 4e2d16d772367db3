"""``sweep <command>``: one parser, one place for logging, signals and exit codes.

Each command is a module of :mod:`sweep.commands` with ``HELP`` (its line in
``sweep --help``), ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args, stop) -> int``.
``python -m sweep.launch`` and the other ``python -m sweep.X`` modules are aliases of
``sweep X`` (:func:`alias`).

Exit codes: 0 done; 1 a study that did not reach its budget, or a worker that failed;
2 bad input (nothing written); 3 the storage stopped answering; 130 interrupted (running
trials requeued: the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from types import ModuleType
from typing import NoReturn

from sweep.commands import dashboard, export, launch, report, studies, verify, worker
from sweep.errors import Interrupted, SweepError
from sweep.settings import ENV, Settings, current
from sweep.stop import StopEvent

__all__ = ["COMMANDS", "Parser", "alias", "command_parser", "main", "os_error", "parser"]

COMMANDS: dict[str, ModuleType] = {
    "launch": launch,
    "worker": worker,
    "dashboard": dashboard,
    "report": report,
    "verify": verify,
    "export": export,
    "studies": studies,
}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: the same contract as every other bad input.
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweep")
    except PackageNotFoundError:
        return "unknown"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="debug logging, and TensorFlow's start-up lines (also: $SWEEP_VERBOSE=1)",
    )


def parser() -> argparse.ArgumentParser:
    """``sweep``: every command as a subcommand."""
    p = Parser(
        prog="sweep",
        description="Hyperparameter sweeps of Keras CNNs on Optuna: every trial against the "
        "baseline. Run `sweep COMMAND --help` for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module in COMMANDS.items():
        cp = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(cp)
        _common(cp)
    return p


def command_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of one command, as ``sweep NAME`` (or ``prog``) shows it."""
    module = COMMANDS[name]
    p = Parser(prog=prog or f"sweep {name}", description=module.DESCRIPTION)
    module.add_arguments(p)
    _common(p)
    return p


def setup_logging(*, verbose: bool, settings: Settings | None = None) -> None:
    """Console logging for the commands; TensorFlow and Keras kept quiet unless verbose."""
    settings = settings or Settings()
    level = "DEBUG" if verbose else settings.log_level
    label = settings.worker_label
    where = f"{label} " if label else ""
    logging.basicConfig(level=level, format=f"%(levelname)s {where}%(name)s: %(message)s")
    for chatty in ("matplotlib", "PIL"):  # font lookups at DEBUG, one line per glyph size
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if verbose:
        return
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    # Each trial builds a new model, so tf.function retraces by design; don't warn about it.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _run(name: str, args: argparse.Namespace) -> int:
    # TensorFlow's start-up lines are shown when the user asks: --verbose, $SWEEP_VERBOSE=1,
    # or a TF_CPP_MIN_LOG_LEVEL of their own. Workers inherit the choice through $SWEEP_VERBOSE.
    verbose = ENV["verbose"].name
    if args.verbose or (verbose not in os.environ and "TF_CPP_MIN_LOG_LEVEL" in os.environ):
        os.environ[verbose] = "1"
    try:
        settings = current()  # a bad SWEEP_* variable: refused before anything runs
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    setup_logging(verbose=args.verbose, settings=settings)
    stop = StopEvent()
    stop.install()
    try:
        code: int = COMMANDS[name].run(args, stop)
        return code
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`sweep launch --dry-run | head`): stop writing, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        # A path the operating system refuses, wherever a command met it (a name too long, a
        # folder it cannot read or write, a home that does not exist): one line naming it.
        print(f"error: {os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A Ctrl-C the command did not handle (a second one, while the first is handled).
        print("interrupted", file=sys.stderr)
        return 130


def os_error(exc: OSError) -> str:
    """An error of the operating system's as one line: the path, what it said, the fix."""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return (
        f"{where}{exc.strerror or exc}; use a path that this user can read and write "
        "(check its name's length, its folders and their permissions)"
    )


def main(argv: list[str] | None = None) -> int:
    """``sweep``: parse, then run the command; returns the exit code."""
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help(sys.stderr)
        return 2
    return _run(args.command, args)


def alias(name: str, argv: list[str] | None = None) -> int:
    """``python -m sweep.NAME``: exactly ``sweep NAME``, under its own program name."""
    args = command_parser(name, prog=f"python -m sweep.{name}").parse_args(argv)
    return _run(name, args)
