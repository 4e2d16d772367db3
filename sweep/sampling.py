"""The study's sampler, its randomness drawn afresh for each trial from the study's seed.

Optuna seeds a sampler once per process, so workers that share a seed (three ``sweep
launch`` processes of one study, or compose workers on several hosts) draw the same
parameters, trial after trial, and spend part of the budget twice on one point; offsetting the
seed by a worker's index or pid made the draws differ, but no longer reproducible. Here every
trial reseeds the sampler from the study's seed and its own trial number, which the storage
gives to exactly one trial: the draws differ across workers wherever they run, and a trial's
draw depends only on the study's seed, its number and the trials finished before it.

Imported only where a study is opened (it imports Optuna).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from sweep import _optuna

__all__ = ["TrialSeeded", "trial_sampler_seed"]


def trial_sampler_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number`` of a study seeded ``seed``."""
    return (seed * 1_000_003 + number * 7919 + 1) % 2**32


class TrialSeeded(BaseSampler):
    """``sampler``, reseeded before each trial from ``seed`` and the trial's number."""

    def __init__(self, sampler: BaseSampler, seed: int) -> None:
        self._sampler = sampler
        self._seed = seed

    @property
    def sampler(self) -> BaseSampler:
        """The sampler that draws."""
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        _optuna.reseed(self._sampler, trial_sampler_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
