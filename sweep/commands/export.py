"""``sweep export``: write a trial's trained model to a ``.keras`` file.

The study keeps the models of its best ``keep_models`` trials (see :mod:`sweep.artifacts`);
this copies the best one, or the one of ``--trial N``, out of the artifact store, with a
``.json`` beside it naming its classes. The model takes the study's images as they are (its
input shape, pixel values 0-255) and returns the class probabilities::

    model = keras.models.load_model("best.keras")
    model.predict(images)

No TensorFlow is loaded: the file is copied as it was saved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep import api
from sweep.commands import _options
from sweep.stop import StopEvent

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "write the best trial's model (or trial N's) to a .keras file"
DESCRIPTION = (
    "Write the best trial's model (or trial N's) to a .keras file, ready for "
    "keras.models.load_model."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options.add_existing_study_options(p)
    _options.add_artifacts_option(p)
    p.add_argument(
        "--trial",
        type=int,
        default=None,
        metavar="N",
        help="the trial's number (default: the best trial)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="a .keras file")


def run(args: argparse.Namespace, stop: StopEvent) -> int:
    exported = api.export(
        args.study,
        args.out,
        trial=args.trial,
        storage=_options.storage_url(args, write=False),
        artifacts_dir=args.artifacts,
    )
    print(f"trial {exported.trial} (val accuracy {exported.val_accuracy:.4f}) -> {exported.path}")
    print(f"its class names, input shape and params -> {exported.about}")
    return 0
