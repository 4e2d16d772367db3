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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sweep.errors import UserError

__all__ = [
    "AUGMENT_KEYS",
    "DATASETS",
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
    "settings_markdown",
]

FAMILIES = ("baseline", "dropout", "batchnorm", "twoconv")
"""The Keras CNN families of the reports: Exp 1, Exp 2, Exp 4 and the UNAM network."""
DATASETS = ("synthetic", "cifar10")
SAMPLERS = ("grid", "tpe", "random", "gp")
PRUNERS = ("none", "median", "hyperband")

MAX_SEED = 40_000
SCORES = ("last_epoch", "best_epoch")
BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras's dtype policies
"""Trial seeds are ``seed * 100_003 + trial number``, and must stay below 2**32 for NumPy."""

FAMILY_PARAMS: Mapping[str, tuple[str, ...]] = {"dropout": ("dropout_conv", "dropout_dense")}
"""Hyperparameters that only some families use; every other family ignores them."""


@dataclass(frozen=True)
class Params:
    """Everything that defines one training run; rebuilds a trial's model without Optuna."""

    family: str = "baseline"
    learning_rate: float = 0.001  # Adam's default, as the reports' optimizer='adam'
    batch_size: int = 32
    epochs: int = 10
    dropout_conv: float = 0.25  # Exp 2: Dropout(0.25) after the first conv block
    dropout_dense: float = 0.5  # Exp 2: Dropout(0.5) after Dense(128)
    augment: float = 0.0  # augmentation strength in [0, 1]; 0 is off


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

    @property
    def is_int(self) -> bool:
        return SPACE_KEYS[self.name].type is int

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
    source: Path | None = field(default=None, compare=False)
    text: str = field(default="", compare=False, repr=False)  # the study file, as written

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
        _one_of(
            "dataset",
            "Training data: `synthetic` (built in, offline) or `cifar10`.",
            DATASETS,
            default="synthetic",
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
            lambda v: v >= 1,
            "an integer >= 1",
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
        _one_of(
            "family",
            "CNN family: " + ", ".join(FAMILIES) + ".",
            FAMILIES,
        ),
        Setting(
            "learning_rate",
            float,
            "Adam's learning rate.",
            lambda v: v > 0,
            "a number > 0",
        ),
        Setting("batch_size", int, "Batch size.", lambda v: v >= 1, "an integer >= 1"),
        Setting("epochs", int, "Training epochs.", lambda v: v >= 1, "an integer >= 1"),
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


def _dimension(where: _Where, name: str, raw: Any) -> Dimension:
    setting = SPACE_KEYS[name]
    key = f"space.{name}"
    if isinstance(raw, list):
        if not raw:
            raise where.fail(key, "the list is empty; give at least one value")
        values = tuple(_coerce(where, key, setting, v) for v in raw)
        if len(set(values)) != len(values):
            raise where.fail(key, f"the list {raw!r} repeats a value; list each once")
        if len(values) == 1:
            return Dimension(name, "fixed", values)
        return Dimension(name, "choice", values)
    if isinstance(raw, dict):
        if setting.type is str:
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
            return Dimension(name, "fixed", (low,))
        return Dimension(name, "range", (), float(low), float(high), log, step)
    return Dimension(name, "fixed", (_coerce(where, key, setting, raw),))


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
    _unknown(where, "space.", space_raw, SPACE_KEYS)
    space = tuple(
        _dimension(where, key, space_raw.get(key, getattr(_DEFAULT_PARAMS, key)))
        for key in SPACE_KEYS
    )
    baseline = Params(**_settings(where, "baseline.", _table(where, doc, "baseline"), SPACE_KEYS))
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
    )


def settings_markdown() -> str:
    """The README's table of study-file keys, generated from the declarations above."""
    defaults: dict[str, Any] = {
        "space.": asdict(Params()),
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


def _studies_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [Path.cwd() / "studies", here.parent / "studies"]


def available_studies() -> list[str]:
    """Names of the study files found in ``./studies`` and the repository's ``studies/``."""
    names = {p.stem for d in _studies_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(names)


def names_a_file(study: str) -> bool:
    """Whether ``--study`` is a path to a study file rather than a name."""
    return study.endswith(".toml") or "/" in study


def find_study_file(study: str) -> Path:
    """Resolve ``--study``: a path to a .toml file, or a name in ``studies/``."""
    if names_a_file(study):
        path = Path(study)
        if path.is_dir():
            raise UserError(f"study file {study} is a folder; give the path of a .toml file")
        if not path.is_file():
            raise UserError(f"study file {study} does not exist; give the path of a .toml file")
        return path
    for d in _studies_dirs():
        path = d / f"{study}.toml"
        if path.is_file():
            return path
    known = ", ".join(available_studies()) or "none found"
    raise UserError(f"unknown study {study!r}; the studies are: {known}")


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
    return replace(loads_study(text, name=path.stem, source=str(path)), source=path)


def loads_study(text: str, *, name: str, source: str) -> StudySpec:
    """Parse and validate a study file's text (read from a file, or kept in a storage)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}") from None
    return replace(parse_study(doc, name=name, source=source), text=text)


if __name__ == "__main__":
    print(settings_markdown())
