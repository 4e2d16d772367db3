"""The Keras CNN families of the two original reports, layer for layer as their code.

``build(params)`` is pure: the same :class:`~sweep.config.Params` always give the same
architecture, so the best trial's model can be rebuilt without Optuna.

| family      | report experiment     | parameters (defaults) |
| ----------- | --------------------- | --------------------- |
| `baseline`  | Exp 1 (and Exp 3)     | 923,914               |
| `dropout`   | Exp 2                 | 629,130               |
| `batchnorm` | Exp 4                 | 924,554               |
| `twoconv`   | UNAM two-block report | 315,722               |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sweep.config import FAMILIES, Params

if TYPE_CHECKING:
    import keras

__all__ = ["INPUT_SHAPE", "NUM_CLASSES", "build", "serving_model"]

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def _baseline(p: Params) -> list[keras.Layer]:
    from keras import layers

    return [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
    ]


def _dropout(p: Params) -> list[keras.Layer]:
    from keras import layers

    # Exp 2's code; its prose also lists a Dense before the second conv that the code lacks.
    return [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(p.dropout_conv),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(p.dropout_dense),
    ]


def _batchnorm(p: Params) -> list[keras.Layer]:
    from keras import layers

    return [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.BatchNormalization(),
    ]


def _twoconv(p: Params) -> list[keras.Layer]:
    from keras import layers

    return [
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
    ]


_BODIES: dict[str, Callable[[Params], list[keras.Layer]]] = {
    "baseline": _baseline,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "twoconv": _twoconv,
}
assert tuple(_BODIES) == FAMILIES


def build(params: Params, *, compile: bool = True) -> keras.Model:
    """Build (and compile) the model of ``params.family``.

    Every family ends in Dense(10, softmax) and is compiled as the reports did: Adam,
    sparse categorical cross-entropy, accuracy. The layers take Keras's dtype policy
    (``precision``), the last one excepted.
    """
    import keras

    body = _BODIES[params.family](params)
    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            *body,
            # float32 whatever the dtype policy: a mixed-precision softmax and loss in 16 bits
            # lose the small probabilities.
            keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ],
        name=params.family,
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    return model


def serving_model(model: keras.Model) -> keras.Model:
    """``model`` behind a Rescaling(1/255) layer: it takes CIFAR-10 images as they are
    (32x32x3 pixel values 0-255), as the exported ``.keras`` file should.

    Training feeds the model images already scaled by the input pipeline. The trained model
    is wrapped as it is, not cloned: wrapping, compiling and saving cost 0.075 s of CPU, with a
    clone 0.135 s, and the two files were the same size. It is compiled for ``evaluate``.
    """
    import keras

    inputs = keras.Input(INPUT_SHAPE)
    outputs = model(keras.layers.Rescaling(1 / 255)(inputs))
    serving = keras.Model(inputs, outputs, name=f"{model.name}_serving")
    serving.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return serving
