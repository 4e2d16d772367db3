"""What one run of a study needs, built once from the command line and the environment.

:class:`RunOptions` is frozen and validated when it is made; the launcher, its workers, a
worker started by hand on another host and ``verify`` all work from one. What describes the
study itself (the study file's text, the dataset, the seed, the data subset, the epoch cap and
the budget) is stored in the study by whoever creates it (:mod:`sweep.study`), so a worker
needs only the study's name and the storage URL: it reads the rest from the study. What
belongs to one host (where its data and artifact folders are) comes from its own options or
environment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sweep import data, devices
from sweep.config import MAX_SEED, StudySpec, loads_study
from sweep.errors import UserError
from sweep.space import planned

__all__ = ["RunOptions", "budget", "max_epochs", "spec_from_stored", "with_overrides"]

log = logging.getLogger(__name__)

MAX_STUDY_NAME = 512  # Optuna's studies.study_name column
COMPANION_SUFFIX = ".verify"  # sweep verify records its repeats in study NAME + this


@dataclass(frozen=True)
class RunOptions:
    """A study to run, on which data, with what budget, against which storage.

    Attributes:
        study_name: The study's name in the storage.
        url: The storage URL (it may hold a password: show it through ``redact``).
        spec: The study file, with the dataset and seed it runs on.
        budget: The study's total trial budget, shared by every worker.
        subset: Training images used (None: all), for quick runs.
        max_epochs: A cap on every trial's epochs (None: none).
        data_dir: Where this host finds CIFAR-10 (None: the default places).
        artifacts: This host's artifact folder.
        replace_file: Go on with a study file other than the one the study was created from.
        backend: This host's ``--backend`` (None: see :func:`sweep.devices.backend`).
    """

    study_name: str
    url: str
    spec: StudySpec
    budget: int
    subset: int | None = None
    max_epochs: int | None = None
    data_dir: Path | None = None
    artifacts: Path = Path("sweep-artifacts")
    replace_file: bool = False
    backend: str | None = None

    @property
    def keras_backend(self) -> str:
        """The Keras backend this run's trials train on here (checked installed)."""
        return devices.backend(self.backend, self.spec.backend)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change when a study is resumed: the data its trials are scored on,
        and the sampler's seed where it is not the data's."""
        sampler = {} if self.spec.sampling_seed == self.spec.seed else {
            "sampler_seed": self.spec.sampling_seed
        }  # fmt: skip
        return {
            "dataset": self.spec.dataset,
            "seed": self.spec.seed,
            "subset": self.subset,
            "validation_split": self.spec.validation_split,
            **sampler,
        }

    def load_data(self) -> data.Splits:
        """The run's data: loaded once per process; bad files are a UserError."""
        splits = data.load(
            self.spec.dataset,
            seed=self.spec.seed,
            validation_split=self.spec.validation_split,
            subset=self.subset,
            data_dir=self.data_dir,
        )
        log.info("%s data: %s", self.spec.dataset, splits.sizes())
        return splits

    def __post_init__(self) -> None:
        """What the storage and the data can hold, checked once, before anything runs."""
        if not self.study_name.strip():
            raise UserError("--study-name is empty; give a name, or drop it for the file's")
        longest = MAX_STUDY_NAME - len(COMPANION_SUFFIX)
        if len(self.study_name) > longest:
            raise UserError(
                f"the study name is {len(self.study_name)} characters long; Optuna's storage "
                f"holds at most {MAX_STUDY_NAME}, and {len(COMPANION_SUFFIX)} go to sweep "
                f"verify's {COMPANION_SUFFIX!r} study: use 1 to {longest} (--study-name NAME)"
            )
        data.check_subset(self.spec.dataset, self.subset, self.spec.validation_split)
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise UserError(f"--data-dir {self.data_dir} is a file; give the folder it is in")
        _ = self.keras_backend  # a backend that is unknown or not installed, refused now

    @property
    def top_epochs(self) -> int:
        """The most epochs any trial runs: the pruner's maximum resource."""
        return max_epochs(self.spec, self.max_epochs)


def with_overrides(
    spec: StudySpec, *, dataset: str | None, seed: int | None, sampler_seed: int | None = None
) -> StudySpec:
    """``spec`` with the command line's dataset and seeds, checked."""
    for flag, value in (("--seed", seed), ("--sampler-seed", sampler_seed)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise UserError(f"{flag} {value} is out of range; use an integer in [0, {MAX_SEED}]")
    return replace(
        spec,
        dataset=dataset or spec.dataset,
        seed=spec.seed if seed is None else seed,
        sampler_seed=spec.sampler_seed if sampler_seed is None else sampler_seed,
    )


def spec_from_stored(text: str, *, name: str, study: str, fingerprint: dict[str, Any]) -> StudySpec:
    """The spec a study was created with: its stored file text and the data it runs on."""
    spec = loads_study(text, name=name, source=f"study {study!r}")
    return replace(
        spec,
        dataset=fingerprint.get("dataset", spec.dataset),
        seed=fingerprint.get("seed", spec.seed),
        validation_split=fingerprint.get("validation_split", spec.validation_split),
        sampler_seed=fingerprint.get("sampler_seed", spec.sampler_seed),
    )


def budget(spec: StudySpec, requested: int | None) -> int:
    """The study's total trial budget: ``--n-trials``, else the file's, else the grid's size.

    Raises:
        UserError: a sampled search has no budget anywhere.
    """
    n_planned = len(planned(spec))
    if spec.sampler.name == "grid":
        size = n_planned  # every grid point once, and the baseline if it is not one of them
        if requested is not None and requested > size:
            log.warning("the grid has %d points; running %d trials, not %d", size, size, requested)
        return min(requested or spec.n_trials or size, size)
    if requested is not None:
        return requested
    if spec.n_trials is not None:
        return spec.n_trials
    if not spec.varying:
        return n_planned
    raise UserError(
        f"{spec.source}: n_trials is missing; a {spec.sampler.name} search needs a budget "
        "(add n_trials = N to the file or pass --n-trials N)"
    )


def max_epochs(spec: StudySpec, cap: int | None) -> int:
    """The most epochs any trial of the study runs (the pruner's maximum resource)."""
    d = spec.dimension("epochs")
    top = int(d.high) if d.kind == "range" else max(d.choices)
    top = max(top, spec.baseline.epochs)
    return min(top, cap) if cap else top
