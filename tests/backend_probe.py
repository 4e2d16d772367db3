"""``python tests/backend_probe.py BACKEND DIR``: trains on one Keras backend, in a process of its
own (a process has one backend), and prints what its trials recorded as JSON.

Through sweep's own objective and trial loop, on tiny synthetic data: every family for two
epochs with augmentation; a trial whose learning rate makes it diverge; a trial that its
pruner stops after the first epoch. ``tests/test_backends.py`` runs it for each backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from sweep.records import TrialRecord

FAMILIES = """
description = "every family, augmented"
dataset = "synthetic"
[space]
family = ["baseline", "dropout", "batchnorm", "twoconv"]
epochs = 2
batch_size = 32
augment = 0.5
[sampler]
name = "grid"
[baseline]
epochs = 2
batch_size = 32
augment = 0.5
"""

DIVERGES = """
description = "the baseline, then a learning rate that diverges"
dataset = "synthetic"
[space]
learning_rate = [1e20]
epochs = 2
[baseline]
epochs = 2
"""


def main(backend: str, work: Path) -> dict[str, object]:
    from sweep import devices

    devices.configure(backend)  # before anything imports Keras, as a worker does

    import optuna

    from sweep import data, loop, records
    from sweep import study as studies
    from sweep.config import loads_study
    from sweep.run import RunOptions
    from sweep.stop import StopEvent
    from sweep.storage import open_storage
    from sweep.trial import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = data.load("synthetic", subset=200)
    url = f"sqlite:///{work / 'probe.db'}"
    storage = open_storage(url)
    out: dict[str, object] = {}
    for name, text, budget in (("families", FAMILIES, 4), ("diverges", DIVERGES, 2)):
        spec = loads_study(text, name=name, source="backend_probe")
        run = RunOptions(name, url, spec, budget=budget, subset=200)
        the_study = studies.open_study(run, storage=storage)
        loop.run_trials(
            the_study, Objective(spec, splits), storage=storage, budget=budget, stop=StopEvent()
        )
        out[name] = [_shown(t, records.read(t)) for t in the_study.get_trials()]

    # A pruner that stops every trial at its first report: the trial ends after one epoch.
    pruned = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(1.1))
    spec = loads_study("[space]\nepochs = 3\n", name="pruned", source="backend_probe")
    pruned.optimize(Objective(spec, splits), n_trials=1, catch=())
    out["pruned"] = [_shown(t, records.read(t)) for t in pruned.get_trials()]

    import keras

    out["keras_backend"] = keras.backend.backend()
    out["tensorflow_imported"] = sys.modules.get("tensorflow") is not None
    return out


def _shown(trial: FrozenTrial, record: TrialRecord) -> dict[str, object]:
    return {
        "state": trial.state.name,
        "attrs": sorted(trial.user_attrs),
        "intermediate": trial.intermediate_values,
        "family": record.params.family if record.params else None,
        "n_params": record.n_params,
        "val_accuracy": record.val_accuracy,
        "epochs_run": record.epochs_run,
        "failure": record.failure,
        "backend": record.backend,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
