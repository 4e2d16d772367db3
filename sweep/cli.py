"""What ``sweep.launch`` and ``sweep.worker`` share: options, logging, checks, exit codes.

Every option that says which study to run on which data is declared once here, so a worker
started by the launcher, by hand or by docker-compose reads its command line the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from sweep.config import DATASETS, MAX_SEED, StudySpec, load_study
from sweep.errors import UserError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from sweep.data import Splits

__all__ = [
    "Parser",
    "add_artifacts_option",
    "add_existing_study_options",
    "add_storage_option",
    "add_study_options",
    "artifact_store",
    "check_environment",
    "check_storage",
    "fingerprint",
    "interrupt_on_signals",
    "load_data",
    "load_spec",
    "main_wrapper",
    "open_existing",
    "open_run",
    "positive",
    "run_main",
    "setup_logging",
    "stopping",
    "study_argv",
]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: the same contract as every other bad input.
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def add_study_options(p: argparse.ArgumentParser) -> None:
    """The options that name the study, its storage and its data."""
    p.add_argument(
        "--study",
        required=True,
        metavar="NAME",
        help="study name from studies/ (e.g. quickstart, exp3) or a path to a .toml file",
    )
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="storage URL (default: $SWEEP_STORAGE, else sqlite:///sweep.db); "
        "sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB",
    )
    p.add_argument(
        "--study-name",
        default=None,
        metavar="NAME",
        help="name of the study in the storage (default: the study file's name)",
    )
    p.add_argument(
        "--n-trials",
        type=positive,
        metavar="N",
        default=None,
        help="the study's total trial budget, shared by all workers (default: the study file's)",
    )
    p.add_argument("--dataset", choices=DATASETS, default=None, help="override the dataset")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="where cifar-10-python.tar.gz or cifar-10-batches-py/ is "
        "(default: $SWEEP_DATA_DIR, else ~/.keras/datasets, downloading if absent)",
    )
    p.add_argument(
        "--subset",
        type=positive,
        metavar="N",
        default=None,
        help="use N training images and N/5 test images, for quick runs",
    )
    p.add_argument(
        "--max-epochs",
        type=positive,
        default=None,
        metavar="E",
        help="cap every trial's epochs at E",
    )
    p.add_argument("--seed", type=int, default=None, metavar="S", help="override the study's seed")
    add_artifacts_option(p)


def add_artifacts_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        type=Path,
        metavar="DIR",
        default=None,
        help="artifact folder: the trials' figures and kept models (default: "
        "$SWEEP_ARTIFACTS, else beside the SQLite file: sweep.db -> sweep-artifacts/)",
    )


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="storage URL (default: $SWEEP_STORAGE, else sqlite:///sweep.db)",
    )


def add_existing_study_options(p: argparse.ArgumentParser, *, artifacts: bool = False) -> None:
    """The options of the tools that read a study the launcher made."""
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name in the storage")
    add_storage_option(p)
    if artifacts:
        add_artifacts_option(p)


def open_existing(args: argparse.Namespace) -> tuple[optuna.Study, str]:
    """The study ``args.study`` in ``args.storage`` and the storage URL; creates nothing.

    Raises:
        UserError: a bad URL, a server that does not answer, no such study, or a study that
            ``sweep.launch`` did not make; all found before the storage is opened for writing.
    """
    import optuna

    from sweep.storage import check_url, default_url, open_storage, peek_study_attrs, redact
    from sweep.study import SPEC_ATTR

    url = args.storage or default_url()
    check_url(url)
    attrs = peek_study_attrs(url, args.study, system=True)
    if attrs is None:
        raise UserError(
            f"no study {args.study!r} in {redact(url)}; run python -m sweep.launch --study "
            f"{args.study} first, or pass --storage URL"
        )
    if SPEC_ATTR not in attrs:
        raise UserError(
            f"study {args.study!r} in {redact(url)} was not created by sweep.launch (it has no "
            "study file recorded); run it with python -m sweep.launch first"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=args.study, storage=open_storage(url)), url


def artifact_store(args: argparse.Namespace, url: str, *, create: bool = True) -> Any:
    """The artifact store of ``--artifacts`` or its default for ``url``."""
    from sweep.artifacts import default_dir, open_store

    return open_store(args.artifacts or default_dir(url), create=create)


def study_argv(args: argparse.Namespace, spec: StudySpec) -> list[str]:
    """The study options of ``args`` as a command line for a worker process. The storage URL
    is not among them (it may hold a password, and command lines are public: pass it in
    ``$SWEEP_STORAGE``); nor is the budget, which is the caller's to add."""
    argv = ["--study", str(Path(spec.source or args.study).resolve())]
    argv += ["--study-name", args.study_name or spec.name, "--dataset", spec.dataset]
    argv += ["--seed", str(spec.seed)]
    for flag, value in (
        ("--data-dir", args.data_dir),
        ("--subset", args.subset),
        ("--max-epochs", args.max_epochs),
        ("--artifacts", args.artifacts and args.artifacts.resolve()),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def setup_logging(label: str = "") -> None:
    """Console logging for the CLI; quiet TensorFlow and Keras."""
    level = os.environ.get("SWEEP_LOG_LEVEL", "").upper()
    if not isinstance(logging.getLevelName(level), int):
        level = "INFO"  # an unknown level is refused by check_environment
    where = f"{label} " if label else ""
    logging.basicConfig(level=level, format=f"%(levelname)s {where}%(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    # Each trial builds a new model, so tf.function retraces by design; don't warn about it.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def load_spec(args: argparse.Namespace) -> StudySpec:
    """The study file with the command line's overrides, checked."""
    spec = load_study(args.study)
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed {args.seed} is out of range; use an integer in [0, {MAX_SEED}]")
    spec = replace(
        spec,
        dataset=args.dataset or spec.dataset,
        seed=spec.seed if args.seed is None else args.seed,
    )
    if spec.sampler.name == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise UserError(
                f"{spec.source}: sampler.name: the gp sampler needs PyTorch; "
                "pip install torch, or use tpe"
            )
    return spec


def load_data(spec: StudySpec, args: argparse.Namespace) -> Splits:
    """The study's data, loaded once per process; bad files are a :class:`UserError`."""
    from sweep import data

    splits = data.load(
        spec.dataset,
        seed=spec.seed,
        validation_split=spec.validation_split,
        subset=args.subset,
        data_dir=args.data_dir,
    )
    logging.getLogger("sweep").info("%s data: %s", spec.dataset, splits.sizes())
    return splits


def check_storage(spec: StudySpec, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The storage URL, checked, and the study's user attrs if it exists; writes nothing.

    Raises:
        UserError: a bad URL, a server that does not answer, or a study run on other data.
    """
    from sweep.storage import check_url, default_url
    from sweep.study import check_resumable

    url = args.storage or default_url()
    check_url(url)
    return url, check_resumable(url, args.study_name or spec.name, fingerprint(spec, args))


def open_run(
    spec: StudySpec, args: argparse.Namespace, url: str, *, budget: int, worker: int | None
) -> tuple[optuna.Study, Splits, FileSystemArtifactStore]:
    """Load the data once and open the artifact folder (bad files and folders are refused
    before the storage is touched), then create or load the study with its planned trials."""
    import optuna

    from sweep import study
    from sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = load_data(spec, args)
    store = artifact_store(args, url)
    opened = study.open_study(
        spec,
        storage=open_storage(url),
        name=args.study_name or spec.name,
        fingerprint=fingerprint(spec, args),
        budget=budget,
        max_epochs=study.max_epochs(spec, args.max_epochs),
        worker=worker,
    )
    return opened, splits, store


def fingerprint(spec: StudySpec, args: argparse.Namespace) -> dict[str, Any]:
    """What must not change when a study is resumed: the data its trials are scored on."""
    return {
        "dataset": spec.dataset,
        "seed": spec.seed,
        "subset": args.subset,
        "validation_split": spec.validation_split,
    }


_stopping = False


def stopping() -> bool:
    """Whether SIGINT or SIGTERM has arrived: an error raised from then on is its echo (a
    library that turned the KeyboardInterrupt into an exception of its own), not a failure."""
    return _stopping


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM (Ctrl-C, docker stop, kill, a cluster's scheduler) stop the process
    the same way, even where a shell started it with SIGINT ignored (``cmd &``)."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)


# Environment variables that tune a run: name -> (smallest value allowed, what it means).
_NUMERIC_ENV = {
    "SWEEP_HEARTBEAT_INTERVAL": (1, "seconds between a trial's heartbeats"),
    "SWEEP_HEARTBEAT_GRACE": (1, "seconds without a heartbeat before a trial is stale"),
    "SWEEP_STORAGE_RETRY": (0, "seconds a lost storage connection is retried"),
    "SWEEP_WORKER_INDEX": (-1, "this worker's index, set by sweep.launch"),
    "SWEEP_GPU_MEMORY_MB": (1, "GPU memory limit per worker, in MB"),
}


def check_environment() -> None:
    """Refuse a bad ``SWEEP_*`` environment variable in one line, before anything runs."""
    for name, (least, meaning) in _NUMERIC_ENV.items():
        value = os.environ.get(name, "")
        if not value:
            continue
        try:
            ok = int(value) >= least
        except ValueError:
            ok = False
        if not ok:
            raise UserError(
                f"${name}={value!r}: expected a whole number >= {least} ({meaning}); "
                "fix or unset it"
            )
    level = os.environ.get("SWEEP_LOG_LEVEL", "")
    if level and not isinstance(logging.getLevelName(level.upper()), int):
        raise UserError(f"$SWEEP_LOG_LEVEL={level!r}: use DEBUG, INFO, WARNING or ERROR")


def run_main(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
    *,
    label: str = "",
) -> int:
    """What every ``python -m sweep.X`` does: parse, set up logging, turn SIGINT and SIGTERM
    into KeyboardInterrupt, and run ``main`` under :func:`main_wrapper`."""
    args = parser.parse_args(argv)
    setup_logging(label)
    interrupt_on_signals()
    return main_wrapper(lambda: main(args))


def main_wrapper(main: Callable[[], int]) -> int:
    """Run ``main``; a :class:`UserError` becomes one line on stderr and exit code 2, and a
    Ctrl-C that ``main`` did not handle (a second one, while the first is being handled)
    exits 130 at once, without a traceback."""
    try:
        check_environment()
        return main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
