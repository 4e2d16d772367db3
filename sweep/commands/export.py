"""``sweep export``: write a trial's trained model to a ``.keras`` file.

The study keeps the models of its best ``keep_models`` trials (see :mod:`sweep.artifacts`);
this copies the best one, or the one of ``--trial N``, out of the artifact store. The model
takes CIFAR-10 images as they are (32x32x3, pixel values 0-255) and returns the 10 class
probabilities::

    model = keras.models.load_model("best.keras")
    model.predict(images)

No TensorFlow is loaded: the file is copied as it was saved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep import study
from sweep.artifacts import open_store
from sweep.commands import _options
from sweep.errors import UserError
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
    import optuna

    if args.out.suffix != ".keras":
        raise UserError(f"--out {args.out}: the file must end in .keras (Keras 3's format)")
    if args.out.exists():
        raise UserError(f"--out {args.out} exists; remove it or pick another name")
    if not args.out.resolve().parent.is_dir():
        raise UserError(f"--out {args.out}: folder {args.out.parent} does not exist")
    the_study, storage, the_run = _options.open_existing(args)
    kept = {m.trial: m for m in study.kept_models(storage, the_study)}
    if args.trial is None:
        try:
            number = the_study.best_trial.number
        except ValueError:
            raise UserError(f"study {the_study.study_name!r} has no completed trial yet") from None
    else:
        number = args.trial
    if number not in kept:
        which = ", ".join(str(n) for n in sorted(kept)) or "none"
        raise UserError(
            f"study {the_study.study_name!r} kept no model of trial {number} (it keeps the best "
            f"keep_models trials' models; kept: {which}); pass --trial with one of those"
        )
    store = open_store(the_run.artifacts, create=False)
    try:
        optuna.artifacts.download_artifact(
            artifact_store=store, artifact_id=kept[number].artifact_id, file_path=str(args.out)
        )
    except optuna.artifacts.exceptions.ArtifactNotFound:
        raise UserError(
            f"the model of trial {number} is missing from the artifact folder; pass "
            "--artifacts DIR (or set $SWEEP_ARTIFACTS) to the folder the workers wrote to"
        ) from None
    except OSError as exc:
        args.out.unlink(missing_ok=True)  # no half-written model left behind
        raise UserError(f"--out {args.out}: cannot write it ({exc.strerror})") from None
    print(f"trial {number} (val accuracy {kept[number].value:.4f}) -> {args.out}")
    return 0
