"""The search space: a study's dimensions -> ``trial.suggest_*`` -> :class:`Params`.

Only the dimensions that vary become Optuna parameters; fixed values are filled in from the
study file. Planned trials (the baseline and every grid point) are enqueued with their full
:class:`Params` in the user attr ``point`` and rebuilt from it, so a planned trial always runs
exactly what was planned, even where the baseline lies outside the searched space.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from sweep.config import (
    FAMILY_PARAMS,
    SPACE_KEYS,
    Dimension,
    Params,
    StudySpec,
    is_builtin_family,
)
from sweep.errors import UserError
from sweep.records import planned_params, point_key

if TYPE_CHECKING:
    import optuna

__all__ = [
    "MOST_GRID_POINTS",
    "distribution",
    "grid",
    "grid_size",
    "incompatible_dimensions",
    "optuna_params",
    "planned",
    "point_key",
    "suggest",
]


def _relevant(name: str, family: str) -> bool:
    if not is_builtin_family(family):  # a family of one's own may read any of them
        return True
    if name not in SPACE_KEYS:  # an own hyperparameter: no built-in family reads it
        return False
    return all(name not in keys or fam == family for fam, keys in FAMILY_PARAMS.items())


def _fixed(spec: StudySpec, family: str | None = None) -> dict[str, Any]:
    return {
        d.name: d.choices[0]
        for d in spec.space
        if d.kind == "fixed" and (family is None or not d.is_own or _relevant(d.name, family))
    }


MOST_GRID_POINTS = 10_000
"""A grid runs each point once, each a training run: past this, a study is a search (a sampler
over the same lists, with a budget), not a grid to enqueue and to wait for."""


def _axes(spec: StudySpec, family: str) -> list[Dimension]:
    return [
        d
        for d in spec.varying
        if d.name != "family" and _relevant(d.name, family) and d.kind == "choice"
    ]


def grid_size(spec: StudySpec) -> int:
    """How many points :func:`grid` gives, counted without making them."""
    return sum(math.prod(len(d.choices) for d in _axes(spec, f)) for f in spec.families)


def grid(spec: StudySpec) -> list[Params]:
    """Every grid point, in file order; family-only dimensions only for their family.

    Raises:
        UserError: more than :data:`MOST_GRID_POINTS` points.
    """
    size = grid_size(spec)
    if size > MOST_GRID_POINTS:
        raise UserError(
            f"{spec.origin}: the grid has {size} points, more than the {MOST_GRID_POINTS} a "
            'grid runs; shorten the [space] lists, or set [sampler] name = "random" (or '
            "tpe) with n_trials to search them"
        )
    points: list[Params] = []
    for family in spec.families:
        fixed = {k: v for k, v in _fixed(spec, family).items()}
        axes = _axes(spec, family)
        for combo in itertools.product(*(d.choices for d in axes)):
            values = (
                fixed | {"family": family} | {d.name: v for d, v in zip(axes, combo, strict=True)}
            )
            points.append(_params(values))
    return points


def planned(spec: StudySpec) -> list[Params]:
    """The trials a study enqueues: the baseline first, then each grid point once."""
    points = [spec.baseline]
    if spec.sampler.name == "grid" or not spec.varying:
        points += grid(spec)
    unique = {point_key(p): p for p in points}
    return list(unique.values())


def optuna_params(spec: StudySpec, params: Params) -> dict[str, Any]:
    """The Optuna parameters of ``params``: the varying dimensions that contain its values."""
    out = {}
    for d in spec.varying:
        if not _relevant(d.name, params.family):
            continue
        value = params.get(d.name)
        if value is not None and d.contains(value):
            out[d.name] = value
    return out


def distribution(d: Dimension) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution a varying dimension is suggested from."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if d.kind == "choice":
        return CategoricalDistribution(list(d.choices))
    if d.is_int:
        return IntDistribution(int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return FloatDistribution(d.low, d.high, step=d.step, log=d.log)


def incompatible_dimensions(before: StudySpec, after: StudySpec) -> str | None:
    """The first dimension varying in both specs whose Optuna distributions cannot share a
    study (another kind, another scale, another list of choices); None if there is none."""
    from optuna.distributions import check_distribution_compatibility

    old = {d.name: d for d in before.varying}
    for d in after.varying:
        if d.name in old:
            try:
                check_distribution_compatibility(distribution(old[d.name]), distribution(d))
            except ValueError:
                return d.name
    return None


def _suggest(trial: optuna.Trial, d: Dimension) -> Any:
    if d.kind == "choice":
        return trial.suggest_categorical(d.name, list(d.choices))
    if d.is_int:
        step = int(d.step or 1)
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=step, log=d.log)
    return trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)


def suggest(trial: optuna.Trial, spec: StudySpec) -> Params:
    """Draw one trial's :class:`Params` (or rebuild a planned trial's)."""
    params = planned_params(trial)
    if params is not None:
        for name in optuna_params(spec, params):
            _suggest(trial, spec.dimension(name))  # records it; returns the enqueued value
        return params
    family_dim = spec.dimension("family")
    family = family_dim.choices[0] if family_dim.kind == "fixed" else _suggest(trial, family_dim)
    values = _fixed(spec, family) | {"family": family}
    for d in spec.varying:
        if d.name != "family" and _relevant(d.name, family):
            values[d.name] = _suggest(trial, d)
    return _params(values)


def _params(values: dict[str, Any]) -> Params:
    """The Params of a point: an own hyperparameter's value as its dimension's type."""
    return Params.from_dict(values)
