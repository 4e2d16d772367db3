"""Options the commands share, declared once, and the one place they become a RunOptions."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sweep import api
from sweep.config import BACKENDS, DATASETS
from sweep.run import RunOptions, default_artifacts

__all__ = [
    "add_artifacts_option",
    "add_existing_study_options",
    "add_run_options",
    "add_storage_option",
    "positive",
    "run_from_file",
    "storage_url",
]

log = logging.getLogger("sweep")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="storage URL (default: $SWEEP_STORAGE, else sqlite:///sweep.db); "
        "sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB",
    )


def add_artifacts_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        type=Path,
        metavar="DIR",
        default=None,
        help="artifact folder: the trials' figures and kept models (default: "
        "$SWEEP_ARTIFACTS, else beside the SQLite file: sweep.db -> sweep-artifacts/)",
    )


def add_existing_study_options(p: argparse.ArgumentParser) -> None:
    """``--study`` and ``--storage`` of the commands that read a study sweep made."""
    p.add_argument("--study", required=True, metavar="NAME", help="the study's name in the storage")
    add_storage_option(p)


def add_run_options(p: argparse.ArgumentParser, *, study_help: str) -> None:
    """The options that name the study, its storage and its data."""
    p.add_argument("--study", required=True, metavar="NAME", help=study_help)
    add_storage_option(p)
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
    p.add_argument(
        "--dataset",
        default=None,
        metavar="NAME|PATH",
        help="override the dataset: " + ", ".join(DATASETS) + ", or the path of a folder of "
        "images (one subfolder per class) or of an .npz file",
    )
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
    p.add_argument(
        "--sampler-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed the sampler alone (default: the seed): another search on the same data",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="Keras backend to train on (default: the study file's backend, else "
        "$KERAS_BACKEND, else tensorflow); jax and torch need pip install -e '.[jax]' or "
        "'.[torch]'",
    )
    p.add_argument(
        "--replace-study-file",
        action="store_true",
        help="resume a study with a study file other than the one it was created from (the "
        "old file is kept in the study); a new baseline or a dimension Optuna cannot change "
        "is still refused",
    )
    add_artifacts_option(p)


def storage_url(args: argparse.Namespace, *, write: bool = True) -> str:
    """``--storage``, else ``$SWEEP_STORAGE``, else the embedded default; checked once (to
    be written, unless ``write`` is false: report, export and the dashboard only read)."""
    return api.storage_url(args.storage, write=write)


def artifacts_dir(args: argparse.Namespace, url: str) -> Path:
    return (args.artifacts or default_artifacts(url)).absolute()


def run_from_file(args: argparse.Namespace, url: str) -> RunOptions:
    """The run of the study file ``--study`` with the command line's options, checked."""
    return api.plan(
        args.study,
        storage=url,
        study_name=args.study_name,
        n_trials=args.n_trials,
        dataset=args.dataset,
        subset=args.subset,
        max_epochs=args.max_epochs,
        seed=args.seed,
        sampler_seed=args.sampler_seed,
        backend=args.backend,
        data_dir=args.data_dir,
        artifacts_dir=args.artifacts,
        replace_study_file=args.replace_study_file,
    )
