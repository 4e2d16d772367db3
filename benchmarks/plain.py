"""What a user would write without the service, for :mod:`benchmarks.overhead`: the same
trials, one after another in one process.

``python -m benchmarks.plain --trials trials.json [--subset N]``: a bare Keras loop,
``model.fit`` on the scaled arrays as the reports did, nothing else.

``python -m benchmarks.plain --optuna sqlite:///x.db --trials trials.json [--subset N]``: a
plain Optuna script: an SQLite study, the trials enqueued, ``study.optimize`` with
optuna-integration's ``KerasPruningCallback``, the test set evaluated and recorded.

Each trial is ``{"params": {...}, "seed": S, "epochs": E}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _bare(trials: list[dict[str, Any]], arrays: tuple[Any, ...]) -> None:
    import keras

    from sweep import models
    from sweep.config import Params

    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    for trial in trials:
        keras.utils.set_random_seed(trial["seed"])
        params = Params.from_dict(trial["params"])
        model = models.build(params)
        model.fit(
            x_train,
            y_train,
            batch_size=params.batch_size,
            epochs=trial["epochs"],
            validation_data=(x_val, y_val),
            verbose=0,
        )
        model.evaluate(x_test, y_test, verbose=0)


def _optuna(url: str, trials: list[dict[str, Any]], arrays: tuple[Any, ...]) -> None:
    import keras
    import optuna
    from optuna_integration.keras import KerasPruningCallback

    from sweep import models
    from sweep.config import Params

    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plain", storage=url, direction="maximize")
    for trial in trials:
        study.enqueue_trial(trial["params"], user_attrs={"seed": trial["seed"]})
    by_seed = {t["seed"]: t for t in trials}

    def objective(trial: optuna.Trial) -> float:
        seed = trial.user_attrs["seed"]
        params = Params(
            **{
                **by_seed[seed]["params"],
                "family": trial.suggest_categorical("family", ["baseline", "twoconv", "batchnorm"]),
                "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
                "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
                "epochs": trial.suggest_int("epochs", 1, 30),
            }
        )
        keras.utils.set_random_seed(seed)
        model = models.build(params)
        history = model.fit(
            x_train,
            y_train,
            batch_size=params.batch_size,
            epochs=by_seed[seed]["epochs"],
            validation_data=(x_val, y_val),
            verbose=0,
            callbacks=[KerasPruningCallback(trial, "val_accuracy")],
        )
        test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
        trial.set_user_attr("test_accuracy", float(test_accuracy))
        trial.set_user_attr("test_loss", float(test_loss))
        return float(history.history["val_accuracy"][-1])

    study.optimize(objective, n_trials=len(trials))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", required=True)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--optuna", metavar="URL", help="run them as a plain Optuna script")
    args = p.parse_args()

    import numpy as np

    from sweep import data

    splits = data.load("synthetic", seed=0, validation_split=0.2, subset=args.subset)
    x_train, x_val, x_test = (
        a.astype(np.float32) / 255 for a in (splits.x_train, splits.x_val, splits.x_test)
    )
    arrays = (x_train, splits.y_train, x_val, splits.y_val, x_test, splits.y_test)
    with open(args.trials) as f:
        trials = json.load(f)
    if args.optuna:
        _optuna(args.optuna, trials, arrays)
    else:
        _bare(trials, arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
