"""Hyperparameter sweeps of Keras CNNs on Optuna: one command, many workers, a dashboard that
compares every trial with the baseline.

The command is ``sweep`` (:mod:`sweep.commands`); the same from Python (:mod:`sweep.api`)::

    import sweep

    results = sweep.run("quickstart")  # or a study file, a spec; data=(x_train, ...) or a path
    results.best, results.baseline, results.to_pandas()

Importing sweep loads neither TensorFlow nor Keras: they load when a model trains.
"""

from sweep.api import (
    Exported,
    Results,
    export,
    plan,
    report,
    results,
    run,
    studies,
    verify,
)
from sweep.config import Params, StudySpec, load_study, loads_study
from sweep.errors import UserError
from sweep.sources import Arrays

__all__ = [
    "Arrays",
    "Exported",
    "Params",
    "Results",
    "StudySpec",
    "UserError",
    "export",
    "load_study",
    "loads_study",
    "plan",
    "report",
    "results",
    "run",
    "studies",
    "verify",
]
