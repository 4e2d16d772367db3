"""Study files: the TOML schema, loading and validation into a frozen :class:`StudySpec`.

A study file is data. Each key is declared once below (:data:`SETTINGS`, :data:`SPACE_KEYS`,
...); that declaration drives validation, ``--dry-run`` output and the README table. Any
unknown key, wrong type or impossible value is a :class:`~sweep.errors.UserError` that names
the file, the key and what is allowed.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from sweep.catalog import available_studies, find_study_file, names_a_file
from sweep.errors import UserError

__all__ = [
    "ARRAYS_PREFIX",
    "AUGMENT_KEYS",
    "BUILTIN_PARAMS",
    "DATASETS",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "PRUNERS",
    "SAMPLERS",
    "SETTINGS",
    "SPACE_KEYS",
    "Augmentation",
    "Dimension",
    "Params",
    "PrunerSpec",
    "SamplerSpec",
    "Setting",
    "StudySpec",
    "available_studies",
    "find_study_file",
    "load_study",
    "loads_study",
    "names_a_file",
    "parse_study",
    "resolve_dataset",
    "settings_markdown",
]

FAMILIES = ("baseline", "dropout", "batchnorm", "twoconv")
"""The built-in Keras CNN families of the reports: Exp 1, Exp 2, Exp 4 and the UNAM network.
A study may also name a family of its own: ``module:function``, or an entry point of the
group :data:`ENTRY_POINT_GROUP` (see :mod:`sweep.models`)."""
ENTRY_POINT_GROUP = "sweep.families"
DATASETS = ("synthetic", "cifar10", "cifar100")
"""The built-in datasets; a study may also name a folder of images or an ``.npz`` file."""
ARRAYS_PREFIX = "arrays:"  # dataset = "arrays:<sha256>": arrays handed to the Python API
COLOR_MODES = ("auto", "rgb", "grayscale")
SAMPLERS = ("grid", "tpe", "random", "gp")
# Past these a value is a typo, not a run: a batch beyond any GPU's memory for these images,
# epochs beyond years of training, a budget that no storage would hold.
MOST_BATCH_SIZE = 65_536
MOST_EPOCHS = 10_000
MOST_TRIALS = 1_000_000
PRUNERS = ("none", "median", "hyperband")

MAX_SEED = 40_000
SCORES = ("last_epoch", "best_epoch")
BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras's dtype policies
"""Trial seeds are ``seed * 100_003 + trial number``, and must stay below 2**32 for NumPy."""

FAMILY_PARAMS: Mapping[str, tuple[str, ...]] = {"dropout": ("dropout_conv", "dropout_dense")}
"""Hyperparameters that only some families use; every other family ignores them."""


_STORED: ContextVar[bool] = ContextVar("stored", default=False)  # reading a stored study file
_READS: list[set[str]] = []  # while a family is probed: the own hyperparameters it reads


@dataclass(frozen=True)
class Params:
    """Everything that defines one training run; rebuilds a trial's model without Optuna.

    A family of one's own reads its own hyperparameters (declared in ``[space]``) as
    ``params["filters"]``, ``params.get("filters", 32)`` or ``params.filters``.
    """

    family: str = "baseline"
    learning_rate: float = 0.001  # Adam's default, as the reports' optimizer='adam'
    batch_size: int = 32
    epochs: int = 10
    dropout_conv: float = 0.25  # Exp 2: Dropout(0.25) after the first conv block
    dropout_dense: float = 0.5  # Exp 2: Dropout(0.5) after Dense(128)
    augment: float = 0.0  # augmentation strength in [0, 1]; 0 is off
    extra: tuple[tuple[str, Any], ...] = ()  # a user family's own hyperparameters, by name

    def _own(self, name: str) -> Any:
        for reads in _READS:
            reads.add(name)
        for key, value in self.extra:
            if key == name:
                return value
        raise KeyError(name)

    def __getitem__(self, name: str) -> Any:
        if name in BUILTIN_PARAMS:
            return getattr(self, name)
        try:
            return self._own(name)
        except KeyError:
            raise KeyError(
                f"params has no {name!r}; declare it in the study file's [space]"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and dataclass machinery: never an own value
            raise AttributeError(name)
        try:
            return self._own(name)
        except KeyError:
            raise AttributeError(
                f"params has no {name!r}; declare it in the study file's [space]"
            ) from None

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name`` (built-in or own), else ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        """Every value by name, the own hyperparameters beside the built-in ones."""
        out = {name: getattr(self, name) for name in BUILTIN_PARAMS}
        return out | dict(self.extra)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Params:
        """The inverse of :meth:`to_dict`: names that are not built in become own values."""
        known = {k: v for k, v in values.items() if k in BUILTIN_PARAMS}
        extra = tuple(sorted((k, v) for k, v in values.items() if k not in BUILTIN_PARAMS))
        return cls(**known, extra=extra)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())


BUILTIN_PARAMS = tuple(f.name for f in fields(Params) if f.name != "extra")


def is_builtin_family(family: str) -> bool:
    return family in FAMILIES


def check_family_name(family: str) -> str | None:
    """Why ``family`` cannot name a family (None if it can): a built-in, ``module:function``,
    or an installed entry point of the group ``sweep.families``."""
    if family in FAMILIES:
        return None
    if ":" in family:
        module, _, function = family.partition(":")
        if all(p.isidentifier() for p in module.split(".")) and function.isidentifier():
            return None
        return "a family of one's own is written module:function, e.g. mymodels:build"
    from importlib.metadata import entry_points

    if _STORED.get() or entry_points(group=ENTRY_POINT_GROUP, name=family):
        return None  # a stored study is read back where its entry point may not be installed
    return (
        "use one of " + ", ".join(FAMILIES) + ", a function of your own as module:function, "
        f"or an installed entry point of the group {ENTRY_POINT_GROUP}"
    )


@dataclass(frozen=True)
class Augmentation:
    """Augmentation ranges at strength 1; a trial's ``augment`` scales them linearly."""

    rotation: float = 20.0  # degrees (UNAM's suggestion; Exp 4 used 15)
    shift: float = 0.2  # fraction of width and height
    zoom: float = 0.2
    shear: float = 0.0
    flip: bool = True  # horizontal flip, on whenever the strength is above 0


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's domain: a fixed value, a list of choices, or a range."""

    name: str
    kind: Literal["fixed", "choice", "range"]
    choices: tuple[Any, ...] = ()  # the value for `fixed`, the options for `choice`
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    type: type = float  # int, float, str or bool: the values' type

    @property
    def is_int(self) -> bool:
        return self.type is int

    @property
    def is_own(self) -> bool:
        """A hyperparameter of a family of one's own, not one sweep knows."""
        return self.name not in SPACE_KEYS

    def contains(self, value: Any) -> bool:
        if self.kind != "range":
            return value in self.choices
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.choices[0])
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        scale = ", log scale" if self.log else ""
        step = f", step {self.step:g}" if self.step else ""
        return f"range [{self.low:g}, {self.high:g}]{scale}{step}"


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    n_startup_trials: int = 10  # TPE: random trials before the model takes over


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "none"
    min_resource: int = 1  # hyperband: epochs every trial gets before it can be pruned
    reduction_factor: int = 3  # hyperband
    n_warmup_steps: int = 2  # median: epochs every trial trains before it can be pruned
    n_startup_trials: int = 3  # median: complete trials before anything is pruned


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    description: str
    dataset: str
    seed: int
    validation_split: float
    n_trials: int | None  # None: the size of the grid, or the baseline alone
    space: tuple[Dimension, ...]
    baseline: Params
    sampler: SamplerSpec
    pruner: PrunerSpec
    augmentation: Augmentation
    keep_models: int = 3
    sampler_seed: int | None = None  # None: seed
    score: str = "last_epoch"  # or "best_epoch"
    backend: str | None = None  # None: $KERAS_BACKEND, else tensorflow
    precision: str = "float32"
    image_size: tuple[int, int] | None = None  # a folder's images resized to (height, width)
    color_mode: str = "auto"
    source: Path | None = field(default=None, compare=False)
    text: str = field(default="", compare=False, repr=False)  # the study file, as written

    @property
    def origin(self) -> str:
        """Where the study came from, for messages: its file, else ``study NAME``."""
        return str(self.source) if self.source is not None else f"study {self.name!r}"

    @property
    def sampling_seed(self) -> int:
        """The sampler's seed: ``sampler_seed``, else ``seed``."""
        return self.seed if self.sampler_seed is None else self.sampler_seed

    def dimension(self, name: str) -> Dimension:
        return next(d for d in self.space if d.name == name)

    @property
    def families(self) -> tuple[str, ...]:
        fam = self.dimension("family")
        return tuple(fam.choices) if fam.kind != "range" else FAMILIES

    @property
    def own_families(self) -> tuple[str, ...]:
        """The families of one's own that the study trains, the baseline's included."""
        names = dict.fromkeys([self.baseline.family, *self.families])
        return tuple(f for f in names if not is_builtin_family(f))

    @property
    def own_keys(self) -> tuple[str, ...]:
        """The hyperparameters of the families of one's own, as ``[space]`` declares them."""
        return tuple(d.name for d in self.space if d.is_own)

    @property
    def builtin_data(self) -> bool:
        return self.dataset in DATASETS

    @property
    def varying(self) -> tuple[Dimension, ...]:
        """The dimensions that differ between trials: Optuna's parameters."""
        return tuple(d for d in self.space if d.kind != "fixed")


@dataclass(frozen=True)
class Setting:
    """One key of the study file: its type, default and meaning, declared once."""

    name: str
    type: type
    help: str
    check: Callable[[Any], bool] | None = None
    allowed: str = ""
    default: Any = None  # top-level keys only; tables take theirs from their dataclass


def _one_of(name: str, help: str, choices: tuple[str, ...], *, default: Any = None) -> Setting:
    """A string setting that must be one of ``choices``."""
    return Setting(
        name, str, help, lambda v: v in choices, "one of " + ", ".join(choices), default=default
    )


def _between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Any:
    def check(v: float) -> bool:
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)

    return check


SETTINGS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting("description", str, "One line shown in --dry-run and reports.", default=""),
        Setting(
            "dataset",
            str,
            "Training data: `synthetic` (built in, offline), `cifar10`, `cifar100` (fine "
            "labels), or a path (relative to the study file) to a folder of images with one "
            "subfolder per class (optionally under `train/` and `test/`) or to an `.npz` with "
            "`x_train`, `y_train`, `x_test`, `y_test` and optionally `class_names`.",
            lambda v: bool(v.strip()),
            "a built-in name (" + ", ".join(DATASETS) + ") or a path",
            default="synthetic",
        ),
        Setting(
            "image_size",
            list,
            "A folder's images are resized to `[height, width]` (default: they must all have "
            "one size). Ignored for the built-in datasets and `.npz` files.",
            lambda v: len(v) == 2 and all(isinstance(n, int) and 1 <= n <= 4096 for n in v),
            "two integers [height, width] in [1, 4096]",
            default=None,
        ),
        _one_of(
            "color_mode",
            "A folder's images: `rgb` (3 channels), `grayscale` (1), or `auto` (1 if every "
            "image is grayscale, else 3).",
            COLOR_MODES,
            default="auto",
        ),
        Setting(
            "seed",
            int,
            "Seeds the data split, every trial's training and, unless `sampler_seed` is set, "
            "the sampler.",
            lambda v: 0 <= v <= MAX_SEED,
            f"an integer in [0, {MAX_SEED}]",
            default=0,
        ),
        Setting(
            "sampler_seed",
            int,
            "Seeds the sampler alone (default: `seed`): repeat a search over sampler seeds on "
            "the same data, with the same training seeds.",
            lambda v: 0 <= v <= MAX_SEED,
            f"an integer in [0, {MAX_SEED}]",
            default=None,
        ),
        Setting(
            "validation_split",
            float,
            "Fraction of the training images held out; trials are scored and pruned on it.",
            _between(0, 1, lo_open=True, hi_open=True),
            "a number strictly between 0 and 1",
            default=0.2,
        ),
        Setting(
            "n_trials",
            int,
            "The study's total trial budget (not per worker). Default: the grid's size.",
            lambda v: 1 <= v <= MOST_TRIALS,
            f"an integer from 1 to {MOST_TRIALS}",
            default=None,
        ),
        _one_of(
            "score",
            "The objective: the validation accuracy of the `last_epoch`, or of the "
            "`best_epoch` (then the trial's test scores and kept model are that epoch's).",
            SCORES,
            default="last_epoch",
        ),
        _one_of(
            "backend",
            "Keras 3 backend the trials train on: `tensorflow`, `jax` or `torch` (`pip install "
            "-e '.[jax]'` or `'.[torch]'`). Default: `$KERAS_BACKEND`, else `tensorflow`; "
            "`--backend` overrides both.",
            BACKENDS,
        ),
        _one_of(
            "precision",
            "Keras dtype policy: `float32`, or `mixed_bfloat16` / `mixed_float16` (compute in "
            "16 bits, weights and the softmax in 32; for GPUs that have the 16-bit units).",
            PRECISIONS,
            default="float32",
        ),
        Setting(
            "keep_models",
            int,
            "The best K trials' trained models kept as `.keras` artifacts for "
            "`sweep.export`; a better trial replaces the worst kept. 0 keeps none.",
            lambda v: v >= 0,
            "an integer >= 0",
            default=3,
        ),
    )
}

SPACE_KEYS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "family",
            str,
            "CNN family: " + ", ".join(FAMILIES) + ", or one of your own: `module:function` "
            "(the study file's folder is importable) or an entry point of the group "
            f"`{ENTRY_POINT_GROUP}`. Its own hyperparameters are further `[space]` keys.",
            lambda v: check_family_name(v) is None,
            "one of " + ", ".join(FAMILIES) + ", module:function, or an entry point name",
        ),
        Setting(
            "learning_rate",
            float,
            "Adam's learning rate.",
            lambda v: v > 0,
            "a number > 0",
        ),
        Setting(
            "batch_size",
            int,
            "Batch size.",
            lambda v: 1 <= v <= MOST_BATCH_SIZE,
            f"an integer from 1 to {MOST_BATCH_SIZE}",
        ),
        Setting(
            "epochs",
            int,
            "Training epochs.",
            lambda v: 1 <= v <= MOST_EPOCHS,
            f"an integer from 1 to {MOST_EPOCHS}",
        ),
        Setting(
            "dropout_conv",
            float,
            "`dropout` family: rate after the first conv block.",
            _between(0, 1, hi_open=True),
            "a number in [0, 1)",
        ),
        Setting(
            "dropout_dense",
            float,
            "`dropout` family: rate after Dense(128).",
            _between(0, 1, hi_open=True),
            "a number in [0, 1)",
        ),
        Setting(
            "augment",
            float,
            "Augmentation strength: scales the [augmentation] ranges; 0 is off.",
            _between(0, 1),
            "a number in [0, 1]",
        ),
    )
}

AUGMENT_KEYS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "rotation",
            float,
            "Rotation range in degrees at strength 1.",
            _between(0, 180),
            "degrees in [0, 180]",
        ),
        Setting(
            "shift",
            float,
            "Width and height shift, fraction of the image, at strength 1.",
            _between(0, 1),
            "a fraction in [0, 1]",
        ),
        Setting(
            "zoom",
            float,
            "Zoom range at strength 1.",
            _between(0, 1, hi_open=True),
            "a fraction in [0, 1)",
        ),
        Setting(
            "shear",
            float,
            "Shear range at strength 1.",
            _between(0, 1),
            "a fraction in [0, 1]",
        ),
        Setting("flip", bool, "Random horizontal flip when the strength is above 0."),
    )
}

SAMPLER_KEYS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        _one_of(
            "name",
            "Sampler: " + ", ".join(SAMPLERS) + ". `grid` runs every point once.",
            SAMPLERS,
        ),
        Setting(
            "n_startup_trials",
            int,
            "TPE: random trials before the model takes over.",
            lambda v: v >= 0,
            "an integer >= 0",
        ),
    )
}

PRUNER_KEYS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        _one_of(
            "name",
            "Pruner: " + ", ".join(PRUNERS) + "; prunes on validation accuracy per epoch.",
            PRUNERS,
        ),
        Setting(
            "min_resource",
            int,
            "hyperband: epochs every trial runs before it can be pruned.",
            lambda v: v >= 1,
            "an integer >= 1",
        ),
        Setting(
            "reduction_factor",
            int,
            "hyperband: keep 1 in this many at each rung (rungs after epochs min_resource, "
            "× factor, × factor², ...: 1, 3, 9 by default).",
            lambda v: v >= 2,
            "an integer >= 2",
        ),
        Setting(
            "n_warmup_steps",
            int,
            "median: epochs every trial trains before it can be pruned.",
            lambda v: v >= 0,
            "an integer >= 0",
        ),
        Setting(
            "n_startup_trials",
            int,
            "median: finished trials before any is pruned.",
            lambda v: v >= 0,
            "an integer >= 0",
        ),
    )
}

_DEFAULT_PARAMS = Params()
TABLES = ("space", "baseline", "sampler", "pruner", "augmentation")


class _Where:
    """Names the place of a value in messages: ``studies/exp3.toml: space.epochs``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> UserError:
        return UserError(f"{self.source}: {key}: {problem}")


def _type_name(t: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
    }[t]


def _coerce(where: _Where, key: str, setting: Setting, value: Any) -> Any:
    """Check one scalar against its setting; ints are accepted where numbers are."""
    t = setting.type
    if t is bool:
        ok = isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, t) and not isinstance(value, bool)
    if not ok:
        allowed = setting.allowed or _type_name(t)
        raise where.fail(key, f"expected {_type_name(t)}, got {value!r}; use {allowed}")
    value = t(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise where.fail(key, f"{value!r} is not a finite number")
    if setting.check is not None and not setting.check(value):
        raise where.fail(key, f"{value!r} is not allowed; use {setting.allowed}")
    return value


def _unknown(where: _Where, prefix: str, table: Mapping[str, Any], known: Any) -> None:
    for key in table:
        if key not in known:
            raise where.fail(
                f"{prefix}{key}",
                "unknown key; known keys are " + ", ".join(sorted(known)),
            )


def _table(where: _Where, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise where.fail(name, f"expected a table ([{name}]), got {value!r}")
    return value


def _settings(
    where: _Where, prefix: str, table: Mapping[str, Any], keys: Mapping[str, Setting]
) -> dict[str, Any]:
    _unknown(where, prefix, table, keys)
    return {k: _coerce(where, prefix + k, keys[k], v) for k, v in table.items()}


def _own_setting(where: _Where, name: str, raw: Any) -> Setting:
    """The setting of a family's own hyperparameter, its type read from its values."""
    key = f"space.{name}"
    if not name.isidentifier() or name.startswith("_") or hasattr(Params, name):
        raise where.fail(
            key,
            "an own hyperparameter's name must be a Python identifier that does not start "
            "with _ and is not one of Params' own (extra, get, to_dict, from_dict); rename it",
        )
    values = [raw.get(b) for b in ("low", "high")] if isinstance(raw, dict) else raw
    values = [v for v in (values if isinstance(values, list) else [values]) if v is not None]
    kinds = {type(v) for v in values}
    if kinds and kinds <= {int}:
        t: type = int
    elif kinds and kinds <= {int, float}:
        t = float
    elif len(kinds) == 1 and kinds <= {str, bool}:
        t = kinds.pop()
    else:
        shown = ", ".join(sorted(k.__name__ for k in kinds)) or "nothing"
        raise where.fail(
            key, f"the values mix {shown}; give integers, numbers, strings or true/false"
        )
    return Setting(name, t, "a family's own hyperparameter")


def _dimension(where: _Where, name: str, raw: Any, setting: Setting | None = None) -> Dimension:
    setting = setting or SPACE_KEYS[name]
    t = setting.type
    key = f"space.{name}"
    if isinstance(raw, list):
        if not raw:
            raise where.fail(key, "the list is empty; give at least one value")
        values = tuple(_coerce(where, key, setting, v) for v in raw)
        if len(set(values)) != len(values):
            raise where.fail(key, f"the list {raw!r} repeats a value; list each once")
        if len(values) == 1:
            return Dimension(name, "fixed", values, type=t)
        return Dimension(name, "choice", values, type=t)
    if isinstance(raw, dict):
        if t in (str, bool):
            raise where.fail(key, "a range needs numbers; list the choices instead")
        _unknown(where, key + ".", raw, ("low", "high", "log", "step"))
        for bound in ("low", "high"):
            if bound not in raw:
                raise where.fail(key, f"a range needs both low and high; {bound} is missing")
        low = _coerce(where, key + ".low", setting, raw["low"])
        high = _coerce(where, key + ".high", setting, raw["high"])
        if low > high:
            raise where.fail(key, f"low {low!r} is greater than high {high!r}; swap them")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise where.fail(key + ".log", f"expected true or false, got {log!r}")
        step = raw.get("step")
        if step is not None:
            number = isinstance(step, int | float) and not isinstance(step, bool)
            if not number or not math.isfinite(step) or step <= 0:  # NaN is not <= 0
                raise where.fail(key + ".step", f"expected a finite number > 0, got {step!r}")
            if low < high and step > high - low:
                raise where.fail(
                    key + ".step",
                    f"{step!r} is wider than the range [{low!r}, {high!r}], which would hold "
                    "one value; use a smaller step, or a fixed value",
                )
            if log:
                raise where.fail(key, "step and log cannot be combined; drop one of them")
            if setting.type is int and (not float(step).is_integer()):
                raise where.fail(key + ".step", f"expected a whole number >= 1, got {step!r}")
        if log and low <= 0:
            raise where.fail(key, "a log-scale range needs low > 0")
        if low == high:
            return Dimension(name, "fixed", (low,), type=t)
        return Dimension(name, "range", (), float(low), float(high), log, step, type=t)
    return Dimension(name, "fixed", (_coerce(where, key, setting, raw),), type=t)


def parse_study(doc: Mapping[str, Any], *, name: str, source: str) -> StudySpec:
    """Validate a parsed TOML document into a :class:`StudySpec`.

    Args:
        doc: The TOML document as a dict.
        name: The study's name (the file's stem).
        source: Where the document came from, for messages.

    Raises:
        UserError: naming the first key that is wrong and what is allowed.
    """
    where = _Where(source)
    _unknown(where, "", doc, (*SETTINGS, *TABLES))
    top = {k: v for k, v in doc.items() if k not in TABLES}
    top_values = {s.name: s.default for s in SETTINGS.values()}
    top_values |= _settings(where, "", top, SETTINGS)

    space_raw = _table(where, doc, "space")
    own = {k: v for k, v in space_raw.items() if k not in SPACE_KEYS}
    space = tuple(
        _dimension(where, key, space_raw.get(key, getattr(_DEFAULT_PARAMS, key)))
        for key in SPACE_KEYS
    ) + tuple(
        _dimension(where, key, raw, _own_setting(where, key, raw)) for key, raw in own.items()
    )
    families = {c for d in space if d.name == "family" for c in d.choices}
    baseline_raw = _table(where, doc, "baseline")
    families.add(baseline_raw.get("family", _DEFAULT_PARAMS.family))
    if own and all(is_builtin_family(f) for f in families if isinstance(f, str)):
        first = next(iter(own))
        raise where.fail(
            f"space.{first}",
            "unknown key; known keys are " + ", ".join(sorted(SPACE_KEYS)) + " (a "
            "hyperparameter of your own needs a family of your own: family = "
            '"module:function")',
        )
    baseline = _baseline(where, baseline_raw, space)
    sampler = SamplerSpec(
        **_settings(where, "sampler.", _table(where, doc, "sampler"), SAMPLER_KEYS)
    )
    pruner = PrunerSpec(**_settings(where, "pruner.", _table(where, doc, "pruner"), PRUNER_KEYS))
    augmentation = Augmentation(
        **_settings(where, "augmentation.", _table(where, doc, "augmentation"), AUGMENT_KEYS)
    )

    if sampler.name == "grid":
        for dim in space:
            if dim.kind == "range":
                raise where.fail(
                    f"space.{dim.name}",
                    "the grid sampler needs a list of values, not a range; "
                    "list the values or pick sampler tpe, random or gp",
                )
    return StudySpec(
        name=name,
        description=top_values["description"],
        dataset=top_values["dataset"],
        seed=top_values["seed"],
        validation_split=top_values["validation_split"],
        n_trials=top_values["n_trials"],
        space=space,
        baseline=baseline,
        sampler=sampler,
        pruner=pruner,
        augmentation=augmentation,
        keep_models=top_values["keep_models"],
        sampler_seed=top_values["sampler_seed"],
        score=top_values["score"],
        backend=top_values["backend"],
        precision=top_values["precision"],
        image_size=None if top_values["image_size"] is None else tuple(top_values["image_size"]),
        color_mode=top_values["color_mode"],
    )


def _baseline(where: _Where, table: Mapping[str, Any], space: tuple[Dimension, ...]) -> Params:
    """The baseline's Params: built-in keys default as :class:`Params` does; a family of one's
    own takes each own hyperparameter from ``[baseline]``, else its fixed ``[space]`` value."""
    own = {d.name: d for d in space if d.is_own}
    keys = {**SPACE_KEYS, **{n: Setting(n, d.type, "") for n, d in own.items()}}
    values = _settings(where, "baseline.", table, keys)
    family = values.get("family", _DEFAULT_PARAMS.family)
    given = {k: v for k, v in values.items() if k in own}
    if is_builtin_family(family):
        if given:
            raise where.fail(
                f"baseline.{next(iter(given))}",
                f"the baseline's family {family} is built in and reads no hyperparameter of "
                "your own; remove the key, or make the baseline a family of your own",
            )
        return Params(**values)
    for name, d in own.items():
        if name in given:
            continue
        if d.kind != "fixed":
            raise where.fail(
                f"baseline.{name}",
                f"missing: the baseline's family {family} reads {name}, which varies in "
                f"[space]; set baseline.{name} to the baseline's value",
            )
        values[name] = d.choices[0]
    return Params.from_dict(values)


def settings_markdown() -> str:
    """The README's table of study-file keys, generated from the declarations above."""
    defaults: dict[str, Any] = {
        "space.": {k: v for k, v in asdict(Params()).items() if k != "extra"},
        "sampler.": asdict(SamplerSpec()),
        "pruner.": asdict(PrunerSpec()),
        "augmentation.": asdict(Augmentation()),
    }
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    groups = {
        "": SETTINGS,
        "space.": SPACE_KEYS,
        "sampler.": SAMPLER_KEYS,
        "pruner.": PRUNER_KEYS,
        "augmentation.": AUGMENT_KEYS,
    }
    for prefix, keys in groups.items():
        for key, setting in keys.items():
            default = setting.default if not prefix else defaults[prefix][key]
            shown = "—" if default is None else f"`{json.dumps(default)}`"
            lines.append(
                f"| `{prefix}{key}` | {setting.type.__name__} | {shown} | {setting.help} |"
            )
    return "\n".join(lines)


def load_study(study: str) -> StudySpec:
    """Find, read, parse and validate a study file.

    Args:
        study: A name from ``studies/`` or a path to a ``.toml`` file.
    """
    path = find_study_file(study)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read study file {path}: {exc}") from None
    spec = loads_study(text, name=path.stem, source=str(path))
    dataset = resolve_dataset(spec.dataset, path.parent)
    if dataset not in DATASETS and not Path(dataset).exists():
        raise UserError(
            f"{path}: dataset: {spec.dataset!r} is not a built-in dataset ("
            + ", ".join(DATASETS)
            + f") and there is no folder or file {dataset}; give one of those, or the path "
            "(relative to the study file) of a folder of images or of an .npz file"
        )
    return replace(spec, source=path, dataset=dataset)


def resolve_dataset(dataset: str, base: Path) -> str:
    """A built-in name as it is; a path made absolute, relative paths from ``base``."""
    if dataset in DATASETS or dataset.startswith(ARRAYS_PREFIX):
        return dataset
    return str((base / Path(dataset).expanduser()).absolute())


def loads_study(
    text: str, *, name: str, source: str | None = None, stored: bool = False
) -> StudySpec:
    """Parse and validate a study file's text (read from a file, kept in a storage, or
    written in code); ``source`` names it in messages (default: ``study NAME``).

    Args:
        stored: The text was kept in a storage: an entry-point family it names is not looked
            up (a host that only reads the study need not have it installed).
    """
    source = source or f"study {name!r}"
    token = _STORED.set(stored)
    try:
        return replace(parse_study(tomllib.loads(text), name=name, source=source), text=text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # a study file is a few tables deep; a value hundreds deep is not
        raise UserError(
            f"{source}: a value is nested too deep (lists or tables inside each other); a "
            "study file's values are numbers, strings, lists of them and small tables"
        ) from None
    finally:
        _STORED.reset(token)


if __name__ == "__main__":
    print(settings_markdown())
