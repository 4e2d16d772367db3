"""``python tests/backend_probe.py BACKEND DIR``: trains on one Keras backend, in a process of its
own (a process has one backend), and prints what its trials recorded as JSON.

Through sweep's own objective and trial loop, on tiny synthetic data: every family for two
epochs with augmentation; a trial whose learning rate makes it diverge; a trial that its
pruner stops after the first epoch; a trial whose training step raises the backend's own
out-of-memory error, then one that trains. ``tests/test_backends.py`` runs it for each backend.
"""

from __future__ import annotations

import json
import sys
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

OUT_OF_MEMORY = """
description = "a batch that does not fit, then a trial that does"
dataset = "synthetic"
[space]
family = ["backend_probe:out_of_memory", "dropout"]
epochs = 2
batch_size = 32
[sampler]
name = "grid"
[baseline]
epochs = 1
"""

_BUILT: list[weakref.ref[Any]] = []  # every model out_of_memory built: each must be freed


def _backend_out_of_memory() -> Exception:
    """The error this process's backend raises when a step does not fit in GPU memory."""
    import keras

    name = keras.backend.backend()
    if name == "jax":
        import jax

        return jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes."
        )
    if name == "torch":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB.")
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")


def out_of_memory(params: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A family whose training step raises the backend's out-of-memory error, as a batch that
    does not fit would: from inside the layer's call, while the step runs (or is traced)."""
    import keras

    class RunsOutOfMemory(keras.layers.Layer):
        def call(self, x: Any, training: bool | None = None) -> Any:
            if training:
                raise _backend_out_of_memory()
            return x

    inputs = keras.Input(input_shape)
    x = RunsOutOfMemory()(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    _BUILT.append(weakref.ref(model))
    return model


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
    studies_here = (
        ("families", FAMILIES, 4),
        ("diverges", DIVERGES, 2),
        ("out_of_memory", OUT_OF_MEMORY, 3),
    )
    for name, text, budget in studies_here:
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

    import gc

    import keras

    # The study imported this file again, as the module its family names.
    from backend_probe import _BUILT as built

    gc.collect()
    out["out_of_memory_models_freed"] = [ref() is None for ref in built]
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
