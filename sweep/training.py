"""Training one network: the core every trial and every ``verify`` repeat runs.

:func:`train` builds a family's model, fits it on the data with the given callbacks (pruning,
per-epoch logging), and scores it on the test set; :func:`scores` turns predictions into the
metrics a trial records. Nothing here knows about Optuna.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from sweep import data, models
from sweep.config import Params, StudySpec, is_builtin_family
from sweep.errors import TrialFailure
from sweep.records import Scores

if TYPE_CHECKING:
    import keras
    import numpy as np

    from sweep._callbacks import EpochLog

__all__ = ["OutOfMemory", "diverged", "out_of_memory", "platform", "scores", "train", "trial_seed"]


class OutOfMemory(TrialFailure):
    """A trial's batch did not fit in the GPU's memory (or the host's, on the CPU): that trial
    fails, its memory is given back, and the worker goes on with the next trial."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a Keras backend's out-of-memory error: TensorFlow's
    ``ResourceExhaustedError``, PyTorch's ``OutOfMemoryError``, or an XLA runtime error of
    JAX's that says ``RESOURCE_EXHAUSTED``. Only backends already imported are asked."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    if errors is not None and isinstance(exc, errors.ResourceExhaustedError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    jax = sys.modules.get("jax")
    runtime = getattr(getattr(jax, "errors", None), "JaxRuntimeError", None)
    return runtime is not None and isinstance(exc, runtime) and "RESOURCE_EXHAUSTED" in str(exc)


def _give_back_memory(backend: str) -> None:
    """After an out-of-memory error: free what the failed step held. Its arrays go back to the
    backend's allocator, which the next trial reuses; PyTorch's cached blocks go back to the
    GPU, for the other workers on it (JAX's and TensorFlow's allocators keep what they took
    until the process ends)."""
    import keras

    keras.backend.clear_session(free_memory=True)  # collects: the step's frames are gone
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    gc.collect()


def trial_seed(study_seed: int, number: int) -> int:
    """The training seed of trial ``number``: reproducible, and different for every trial."""
    return study_seed * 100_003 + number


@functools.cache
def platform() -> str:
    """What a training run's numbers depend on beyond its seed, as one line: Keras and its
    backend's versions, the processor (or GPU) and the threads this process trains with.

    The same seed gives the same numbers only where this line is the same: another machine,
    library version or number of threads per worker (``--workers`` shares the cores) sums
    floating-point numbers in another order, and a few hundred images then differ by points.
    """
    import platform as host
    from importlib import metadata

    import keras

    backend = keras.backend.backend()
    try:
        version = metadata.version(backend)
    except metadata.PackageNotFoundError:
        version = "?"
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS") or os.environ.get("OMP_NUM_THREADS")
    cores = threads or str(len(os.sched_getaffinity(0)))
    return (
        f"keras {keras.__version__}, {backend} {version}, {_processor() or host.machine()}, "
        f"{_gpu(backend) or 'CPU'}, {cores} threads"
    )


def _processor() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _gpu(backend: str) -> str | None:
    """The name of the GPU this process trains on, None on the CPU."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else str(device.device_kind)
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else None


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, cross-entropy loss, macro precision and recall, and the confusion matrix
    (true class by predicted class, as lists) from predictions."""
    import numpy as np

    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    confusion = np.bincount(
        labels * n_classes + predicted, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    true_pos = np.diag(confusion).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(true_pos / confusion.sum(axis=0))
        recall = np.nan_to_num(true_pos / confusion.sum(axis=1))
    # Clipped as Keras's sparse categorical cross-entropy does.
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(picked).mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "confusion": confusion.tolist(),
    }


def train(
    params: Params,
    splits: data.Splits,
    *,
    spec: StudySpec,
    seed: int,
    callbacks: list[keras.callbacks.Callback] | None = None,
    epoch_log: EpochLog | None = None,
) -> tuple[keras.Model, Scores]:
    """Train ``params``' model on ``splits`` and score it on the test set.

    ``epoch_log`` collects the per-epoch metrics; pass one to read them after a pruned run.

    Raises:
        OutOfMemory: a batch did not fit in memory; what it held is given back first.
        TrialFailure: the loss became NaN or infinite (the run diverged), or a family of
            one's own failed to build its model.
    """
    import keras

    from sweep._callbacks import BestWeights, EpochLog  # Keras: imported where a model trains

    # Layer names and Keras's global state start afresh; no gc.collect() (free_memory), a
    # full collection of a process that holds TensorFlow each trial: Python collects anyway.
    keras.backend.clear_session(free_memory=False)
    keras.config.set_dtype_policy(spec.precision)
    keras.utils.set_random_seed(seed)
    try:
        model = models.build(params, input_shape=splits.input_shape, num_classes=splits.num_classes)
    except Exception as exc:  # a family of one's own may fail in any way: this trial fails
        if is_builtin_family(params.family):
            raise
        reason = (str(exc).strip().splitlines() or ["no message"])[0]
        raise TrialFailure(
            f"family {params.family!r} failed to build: {type(exc).__name__}: {reason}"
        ) from None
    augment = data.augmenter(spec.augmentation, params.augment, seed=seed)
    train_ds = data.train_dataset(
        splits.x_train,
        splits.y_train,
        batch_size=params.batch_size,
        seed=seed,
        augment=augment,
    )
    val_ds = data.eval_dataset(splits.x_val, splits.y_val)
    epochs = epoch_log or EpochLog()
    extra = [BestWeights()] if spec.score == "best_epoch" else []
    start = time.perf_counter()
    fits = True
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=params.epochs,
            shuffle=False,  # the pipeline shuffles each epoch (Keras warns of, or adds, its own)
            verbose=0,
            callbacks=[epochs, keras.callbacks.TerminateOnNaN(), *extra, *(callbacks or [])],
        )
        seconds = time.perf_counter() - start
        loss = epochs.history.get("loss", [])
        if not loss or not all(math.isfinite(v) for v in loss):
            raise TrialFailure(diverged(loss))
        probabilities = model.predict(data.eval_dataset(splits.x_test, splits.y_test), verbose=0)
    except Exception as exc:  # only a backend's out-of-memory error is handled here
        if not out_of_memory(exc):
            raise
        fits = False  # raised below, once this frame lets go of the failed step's arrays
    if not fits:
        del model, train_ds, val_ds
        _give_back_memory(keras.backend.backend())
        where = "GPU memory" if _gpu(keras.backend.backend()) else "memory"
        raise OutOfMemory(f"out of {where} at batch {params.batch_size}")
    val = epochs.history["val_accuracy"]
    best = max(range(len(val)), key=val.__getitem__)  # the first of equals
    test = scores(probabilities, splits.y_test)
    return model, Scores(
        val_accuracy=float(val[-1]),
        best_val_accuracy=float(val[best]),
        best_epoch=best + 1,
        score=float(val[best] if spec.score == "best_epoch" else val[-1]),
        test_accuracy=test["accuracy"],
        test_loss=test["loss"],
        precision=test["precision"],
        recall=test["recall"],
        epochs_run=len(loss),
        train_seconds=seconds,
        n_params=model.count_params(),
        history=epochs.history,
        confusion=test["confusion"],
    )


def diverged(loss: list[float]) -> str:
    last = loss[-1] if loss else float("nan")
    return f"diverged: training loss became {last} in epoch {len(loss)}"
