"""The reports' way, for :func:`benchmarks.suite.overhead`: train a list of trials one after
another in one process with ``model.fit`` on the scaled arrays, nothing else.

``python -m benchmarks.plain --trials trials.json [--subset N]``; each trial is
``{"params": {...}, "seed": S, "epochs": E}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", required=True)
    p.add_argument("--subset", type=int, default=None)
    args = p.parse_args()

    import keras
    import numpy as np

    from sweep import data, models
    from sweep.config import Params

    splits = data.load("synthetic", seed=0, validation_split=0.2, subset=args.subset)
    x_train, x_val, x_test = (
        a.astype(np.float32) / 255 for a in (splits.x_train, splits.x_val, splits.x_test)
    )
    with open(args.trials) as f:
        trials = json.load(f)
    for trial in trials:
        keras.utils.set_random_seed(trial["seed"])
        params = Params(**trial["params"])
        model = models.build(params)
        model.fit(
            x_train,
            splits.y_train,
            batch_size=params.batch_size,
            epochs=trial["epochs"],
            validation_data=(x_val, splits.y_val),
            verbose=0,
        )
        model.evaluate(x_test, splits.y_test, verbose=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
