"""The model registry: the Keras CNN families of the two original reports, and yours.

``build(params, ...)`` is pure: the same :class:`~sweep.config.Params` (and data shape) always
give the same architecture, so the best trial's model can be rebuilt without Optuna.

| family      | report experiment     | parameters (defaults, CIFAR-10's 32x32x3 and 10 classes) |
| ----------- | --------------------- | --------------------- |
| `baseline`  | Exp 1 (and Exp 3)     | 923,914               |
| `dropout`   | Exp 2                 | 629,130               |
| `batchnorm` | Exp 4                 | 924,554               |
| `twoconv`   | UNAM two-block report | 315,722               |

A family of one's own is a function ``build(params, input_shape, num_classes)`` that returns a
Keras model ending in a softmax over ``num_classes``; it is named ``module:function`` in the
study file (the study file's folder is importable) or registered as an entry point of the
group ``sweep.families``. It reads its own hyperparameters as ``params["name"]``. Unless it
comes compiled, it is compiled as the built-in ones are: Adam at the trial's learning rate.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.config import (
    _READS,
    ENTRY_POINT_GROUP,
    FAMILIES,
    Params,
    StudySpec,
    is_builtin_family,
)
from sweep.errors import UserError

if TYPE_CHECKING:
    import keras

__all__ = ["INPUT_SHAPE", "NUM_CLASSES", "Builder", "build", "check_families", "family",
           "save_serving"]  # fmt: skip

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10

Builder = Callable[[Params, tuple[int, int, int], int], "keras.Model"]
"""A family: ``(params, input_shape, num_classes) -> keras.Model``."""


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


def _builtin(body: Callable[[Params], list[keras.Layer]]) -> Builder:
    def build(params: Params, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        import keras

        return keras.Sequential(
            [
                keras.Input(input_shape),
                *body(params),
                # float32 whatever the dtype policy: a mixed-precision softmax and loss in 16
                # bits lose the small probabilities.
                keras.layers.Dense(num_classes, activation="softmax", dtype="float32"),
            ],
            name=params.family,
        )

    return build


_REGISTRY: dict[str, Builder] = {name: _builtin(body) for name, body in _BODIES.items()}


def importable(folder: Path | None) -> None:
    """Put ``folder`` (a study file's) first on ``sys.path``: its families import from it."""
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def family(name: str, *, search_path: Path | None = None) -> Builder:
    """The builder of family ``name``: built in, ``module:function``, or an entry point.

    Args:
        search_path: A folder put on ``sys.path`` first (the study file's).

    Raises:
        UserError: the module cannot be imported, or has no such function, or it is not
            callable, naming the family and the fix.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    importable(search_path)
    where = f"family {name!r}"
    if ":" in name:
        module_name, _, function = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - a user's module may raise anything as it loads
            raise UserError(
                f"{where}: cannot import {module_name} ({type(exc).__name__}: {_line(exc)}); "
                f"put {module_name.replace('.', '/')}.py beside the study file, or install it"
            ) from None
        fn = getattr(module, function, None)
        if fn is None:
            raise UserError(
                f"{where}: module {module_name} has no {function!r}; define "
                f"def {function}(params, input_shape, num_classes) there"
            )
    else:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not found:
            raise UserError(
                f"{where}: no entry point of that name in the group {ENTRY_POINT_GROUP}; "
                "install the package that declares it, or name a function as module:function"
            )
        try:
            fn = next(iter(found)).load()
        except Exception as exc:  # noqa: BLE001 - a user's package may raise anything as it loads
            raise UserError(
                f"{where}: its entry point does not load ({type(exc).__name__}: {_line(exc)})"
            ) from None
    if not callable(fn):
        raise UserError(
            f"{where}: {type(fn).__name__} {fn!r} is not callable; make it a function "
            "(params, input_shape, num_classes) -> keras.Model"
        )
    builder: Builder = fn
    return builder


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "no message"


def build(
    params: Params,
    *,
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    compile: bool = True,
    search_path: Path | None = None,
) -> keras.Model:
    """Build (and compile) the model of ``params.family`` for images of ``input_shape``.

    The built-in families end in Dense(num_classes, softmax) and are compiled as the reports
    did: Adam, sparse categorical cross-entropy, accuracy; so is a family of one's own that
    does not come compiled. The layers take Keras's dtype policy (``precision``), the last one
    excepted.

    Raises:
        UserError: the family cannot be found (see :func:`family`).
        TypeError: a family of one's own returned something that is not a Keras model, or a
            model whose output is not ``num_classes`` wide.
    """
    import keras

    fn = family(params.family, search_path=search_path)
    model = fn(params, tuple(input_shape), num_classes)  # type: ignore[arg-type]
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"family {params.family!r} returned {type(model).__name__}, not a keras.Model"
        )
    width = _output_width(model, input_shape)
    if width != num_classes:
        raise TypeError(
            f"family {params.family!r}: the model's output has {width} values per image, but "
            f"the data has {num_classes} classes; end it in "
            "keras.layers.Dense(num_classes, activation='softmax')"
        )
    if compile and not getattr(model, "compiled", False):
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    elif compile and "accuracy" not in _metric_names(model.get_compile_config().get("metrics")):
        raise TypeError(
            f"family {params.family!r} comes compiled without metrics=['accuracy'], which "
            "trials are scored on; add it, or return the model uncompiled"
        )
    return model


def _metric_names(metrics: Any) -> list[str]:
    """The names of a compile config's metrics (strings, or serialized metric objects)."""
    if isinstance(metrics, dict):
        metrics = [m for ms in metrics.values() for m in (ms if isinstance(ms, list) else [ms])]
    names = []
    for m in metrics if isinstance(metrics, list | tuple) else [metrics]:
        if isinstance(m, str):
            names.append(m)
        elif isinstance(m, dict):
            names.append(str(m.get("config", {}).get("name", m.get("class_name", ""))))
    return names


def _output_width(model: keras.Model, input_shape: tuple[int, ...]) -> int | None:
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):  # a subclassed model that has not been called
        import numpy as np

        shape = model(np.zeros((1, *input_shape), "float32")).shape
    return None if not shape or shape[-1] is None else int(shape[-1])


def check_families(
    spec: StudySpec,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    search_path: Path | None = None,
) -> dict[str, int]:
    """Build every family of one's own once, with the baseline's values, before anything is
    written; refuse in one line what would fail every trial.

    Returns:
        Each family's parameter count.

    Raises:
        UserError: a family that cannot be imported, is not callable, raises, returns no
            Keras model or one of the wrong width; or a ``[space]`` key no family reads.
    """
    counts: dict[str, int] = {}
    reads: set[str] = set()
    for name in spec.own_families:
        params = probe_params(spec, name)
        _READS.append(reads)
        try:
            model = build(
                params, input_shape=input_shape, num_classes=num_classes,
                search_path=search_path,
            )  # fmt: skip
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's builder may raise anything
            raise UserError(
                f"family {name!r} failed when built with the baseline's values "
                f"({type(exc).__name__}: {_line(exc)}); fix the builder, then try --dry-run"
            ) from None
        finally:
            _READS.remove(reads)
        counts[name] = model.count_params()
    if spec.own_families:
        for d in spec.space:
            if d.is_own and d.name not in reads:
                raise UserError(
                    f"{spec.source or spec.name}: space.{d.name}: no family reads it (built "
                    f"once each with the baseline's values: {', '.join(spec.own_families)}); "
                    f"read it in the builder as params[{d.name!r}], or remove it"
                )
    return counts


def probe_params(spec: StudySpec, family: str) -> Params:
    """The params a family is built with to check it (and in ``--dry-run``): the baseline's
    own, else the baseline's values with the fixed dimensions and, for a hyperparameter of
    one's own that varies, its first choice or its range's low end."""
    if family == spec.baseline.family:
        return spec.baseline
    values = spec.baseline.to_dict()
    values |= {d.name: d.choices[0] for d in spec.space if d.kind == "fixed"}
    for d in spec.space:
        if d.is_own and d.kind != "fixed":
            values[d.name] = d.choices[0] if d.kind == "choice" else _typed(d, d.low)
    if is_builtin_family(family):
        values = {k: v for k, v in values.items() if k not in spec.own_keys}
    return Params.from_dict(values | {"family": family})


def _typed(d: Any, value: float) -> Any:
    return int(value) if d.is_int else value


def save_serving(
    model: keras.Model, path: Path, *, input_shape: tuple[int, int, int] | None = None
) -> None:
    """Save ``model`` to ``path`` behind a Rescaling(1/255) layer: the file takes images as
    they are (pixel values 0-255, of ``input_shape``, else the shape the model takes).

    Training feeds the model images already scaled by the input pipeline. The trained model
    is wrapped as it is, not cloned, and lends its optimizer (with its state), its loss and
    accuracy to the wrapper: the file then loads without a warning and can be fine-tuned as
    it was trained. While the file is written ``model`` is left uncompiled (a compiled model
    inside a compiled one saves its optimizer twice, and Keras then loads neither); it is
    compiled again afterwards, as it was.
    """
    import keras

    # A subclassed model has no `inputs`: the data's shape, where the caller knows it.
    inputs = keras.Input(input_shape or tuple(model.inputs[0].shape[1:]))
    outputs = model(keras.layers.Rescaling(1 / 255)(inputs))
    serving = keras.Model(inputs, outputs, name=f"{model.name}_serving")
    optimizer = model.optimizer
    serving.compile(
        optimizer=optimizer,
        loss=getattr(model, "loss", None) or "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.optimizer, model.compiled = None, False
    try:
        serving.save(path)
    finally:
        model.optimizer, model.compiled = optimizer, True
