"""The input pipeline on the JAX and PyTorch backends, with no TensorFlow in it; imported
only where a model trains (it imports Keras).

A :class:`ArrayBatches` holds the uint8 arrays and hands Keras one batch at a time: cast and
scaled to [0, 1] on the backend's device, flipped and warped there with ``keras.ops`` (see
:meth:`sweep.data.Augmenter.keras_ops`). The order of each epoch and each batch's draws come
from NumPy generators keyed by (seed, epoch, batch), so the same trial seed gives the same
batches whatever order Keras asks for them in.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import keras
import numpy as np

__all__ = ["ArrayBatches"]


class Warp(Protocol):
    """What the batches need of :class:`sweep.data.Augmenter` (not imported: ``sweep.data``
    imports this module)."""

    def keras_ops(self, images: Any, rng: np.random.Generator) -> Any: ...


class ArrayBatches(keras.utils.PyDataset):
    """Batches of ``(x, y)``: shuffled anew every epoch when ``seed`` is given (training),
    else in order (evaluation); the last batch may be short, as tf.data's is."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        seed: int | None = None,
        augment: Warp | None = None,
    ) -> None:
        # Two threads take the next batches while the model trains on this one; an epoch's
        # batches are all taken before on_epoch_end reshuffles.
        super().__init__(workers=2, use_multiprocessing=False, max_queue_size=4)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
        take = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = keras.ops.convert_to_tensor(self.x[take], "float32") / 255.0
        if self.augment is not None:
            rng = np.random.default_rng([self.seed or 0, self.epoch, index])
            images = self.augment.keras_ops(images, rng)
        return images, self.y[take]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()
