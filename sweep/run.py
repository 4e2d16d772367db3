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

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sweep import data, devices, sources
from sweep.budget import total
from sweep.config import (
    ARRAYS_PREFIX,
    DATASETS,
    MAX_SEED,
    StudySpec,
    loads_study,
    resolve_dataset,
)
from sweep.errors import UserError
from sweep.settings import current

__all__ = [
    "Overrides",
    "RunOptions",
    "Stored",
    "default_artifacts",
    "max_epochs",
    "resolve",
    "spec_from_stored",
    "with_overrides",
]

log = logging.getLogger(__name__)

MAX_STUDY_NAME = 512  # Optuna's studies.study_name column
COMPANION_SUFFIX = ".verify"  # sweep verify records its repeats in study NAME + this
SPEC_ATTR = "sweep:study_file"  # system attr: the study file's name, text and folder


@dataclass(frozen=True)
class Stored:
    """What a study holds about its run (written by :func:`sweep.study.open_study`)."""

    fingerprint: dict[str, Any] | None
    budget: int | None
    max_epochs: int | None
    file_name: str | None
    file_text: str | None
    file_folder: str | None = None  # where the study file was: its families' modules

    @classmethod
    def from_attrs(cls, user: dict[str, Any], system: dict[str, Any]) -> Stored:
        saved = system.get(SPEC_ATTR) or {}
        return cls(
            fingerprint=user.get("fingerprint"),
            budget=user.get("budget"),
            max_epochs=user.get("max_epochs"),
            file_name=saved.get("name"),
            file_text=saved.get("text"),
            file_folder=saved.get("folder"),
        )


@dataclass(frozen=True)
class Overrides:
    """What a command line or a Python call says of a run beyond its study (None: not said).

    Applied to a study file by :func:`resolve`, every one; to a stored run, those that belong
    to this host or this launch (the budget, the epoch cap, the folders, the backend): the
    rest are the study's, checked against it by the worker command.
    """

    study_name: str | None = None
    n_trials: int | None = None
    dataset: str | None = None
    subset: int | None = None
    max_epochs: int | None = None
    seed: int | None = None
    sampler_seed: int | None = None
    backend: str | None = None
    data_dir: Path | None = None
    artifacts: Path | None = None
    replace_file: bool = False


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
    data_sha256: str | None = None  # an own dataset's content hash (None: not yet read)
    code_dir: Path | None = None  # the study file's folder: its own families import from it

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
        own = {} if self.spec.builtin_data else {"data_sha256": self.data_sha256}
        return {
            "dataset": self.spec.dataset,
            "seed": self.spec.seed,
            "subset": self.subset,
            "validation_split": self.spec.validation_split,
            **sampler,
            **own,
        }

    @property
    def data_cache(self) -> Path | None:
        """Where an own dataset is kept, decoded, for every worker: the artifact folder's
        ``datasets/<sha256>.npz`` (None for a built-in dataset, or before it is read)."""
        if self.spec.builtin_data or self.data_sha256 is None:
            return None
        return self.artifacts / "datasets" / f"{self.data_sha256}.npz"

    def read_data(self) -> tuple[RunOptions, sources.Arrays | None]:
        """An own dataset, read once, and this run with its content hash; None for a
        built-in dataset (:meth:`load_data` loads those).

        The decoded copy in :attr:`data_cache` serves first: a worker does not decode a
        folder the launcher (or another worker, on any host sharing the artifact folder)
        has decoded already. Writes nothing (see :meth:`keep_data`).

        Raises:
            UserError: the files are missing or bad, or they differ from the study's.
        """
        if self.spec.builtin_data:
            return self, None
        cache = self.data_cache
        if cache is not None and cache.is_file():
            arrays = sources.read_npz(cache)
        elif self.spec.dataset.startswith(ARRAYS_PREFIX):
            raise UserError(
                f"the study's data (arrays handed to sweep.run) is not in {cache}; give this "
                "worker the artifact folder the study was launched with (--artifacts DIR)"
            )
        else:
            arrays = sources.read_dataset(
                Path(self.spec.dataset),
                image_size=self.spec.image_size,
                color_mode=self.spec.color_mode,
                seed=self.spec.seed,
            )
        digest = sources.content_hash(arrays)
        if self.data_sha256 is not None and digest != self.data_sha256:
            raise UserError(
                f"dataset {self.spec.dataset} differs here from the one study "
                f"{self.study_name!r} runs on (content sha256 {digest[:12]}, not "
                f"{self.data_sha256[:12]}); give this worker the same files, or share the "
                "artifact folder, which holds the study's copy"
            )
        return replace(self, data_sha256=digest), arrays

    def keep_data(self, arrays: sources.Arrays | None) -> None:
        """Write an own dataset to :attr:`data_cache` for the other workers, once."""
        cache = self.data_cache
        if arrays is not None and cache is not None and not cache.is_file():
            sources.write_npz(arrays, cache)

    def load_data(self, arrays: sources.Arrays | None = None) -> data.Splits:
        """The run's data: loaded once per process; bad files are a UserError."""
        if arrays is None and not self.spec.builtin_data:
            _, arrays = self.read_data()
        splits = data.load(
            self.spec.dataset,
            seed=self.spec.seed,
            validation_split=self.spec.validation_split,
            subset=self.subset,
            data_dir=self.data_dir,
            arrays=arrays,
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
        if self.spec.builtin_data:  # an own dataset's size is known once it is read
            data.check_subset(self.spec.dataset, self.subset, self.spec.validation_split)
        if self.data_dir is not None and self.data_dir.exists() and not self.data_dir.is_dir():
            raise UserError(f"--data-dir {self.data_dir} is a file; give the folder it is in")
        _ = self.keras_backend  # a backend that is unknown or not installed, refused now

    @property
    def top_epochs(self) -> int:
        """The most epochs any trial runs: the pruner's maximum resource."""
        return max_epochs(self.spec, self.max_epochs)


def default_artifacts(url: str) -> Path:
    """Where the artifacts of the study storage ``url`` go unless told otherwise:
    ``$SWEEP_ARTIFACTS``, else beside a SQLite file (``sweep.db`` -> ``sweep-artifacts/``),
    else ``sweep-artifacts`` here."""
    import sqlalchemy

    if env := current().artifacts:
        return env
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):  # refused when checked
        return Path("sweep-artifacts")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(parsed.database)
        return db.with_name(f"{db.stem}-artifacts")
    return Path("sweep-artifacts")


def resolve(source: StudySpec | Stored, *, url: str, name: str, said: Overrides) -> RunOptions:
    """The run of study ``name`` at ``url``: from a study file's ``source`` (a new study, or
    one it resumes), or from what the study stores, with what was ``said``. The one place a
    :class:`RunOptions` is made.

    Raises:
        UserError: an override out of range, or a stored study without its file.
    """
    artifacts = (said.artifacts or default_artifacts(url)).absolute()
    if isinstance(source, StudySpec):
        spec = with_overrides(
            source, dataset=said.dataset, seed=said.seed, sampler_seed=said.sampler_seed
        )
        if spec.source is None:  # a study built in code: its data's path is the current folder's
            spec = replace(spec, dataset=resolve_dataset(spec.dataset, Path.cwd()))
            own = not spec.builtin_data and not spec.dataset.startswith(ARRAYS_PREFIX)
            if own and not Path(spec.dataset).exists():
                raise UserError(
                    f"study {spec.name!r}: dataset: there is no folder or file {spec.dataset}; "
                    "give a built-in name or the path of a folder of images or an .npz file"
                )
        return RunOptions(
            study_name=name,
            url=url,
            spec=spec,
            budget=total(spec, said.n_trials),
            subset=said.subset,
            max_epochs=said.max_epochs,
            data_dir=said.data_dir,
            artifacts=artifacts,
            replace_file=said.replace_file,
            backend=said.backend,
            code_dir=spec.source.parent.absolute() if spec.source is not None else Path.cwd(),
        )
    if source.file_text is None or source.file_name is None:
        raise UserError(f"study {name!r} has no study file recorded; run sweep launch first")
    fingerprint = source.fingerprint or {}
    spec = spec_from_stored(
        source.file_text, name=source.file_name, study=name, fingerprint=fingerprint
    )
    n_trials = said.n_trials
    return RunOptions(
        study_name=name,
        url=url,
        spec=spec,
        budget=total(spec, n_trials) if n_trials else source.budget or total(spec, None),
        subset=fingerprint.get("subset"),
        max_epochs=said.max_epochs or source.max_epochs,
        data_dir=said.data_dir,
        artifacts=artifacts,
        backend=said.backend,
        data_sha256=fingerprint.get("data_sha256"),
        code_dir=Path(source.file_folder) if source.file_folder else None,
    )


def with_overrides(
    spec: StudySpec, *, dataset: str | None, seed: int | None, sampler_seed: int | None = None
) -> StudySpec:
    """``spec`` with the command line's dataset and seeds, checked."""
    for flag, value in (("--seed", seed), ("--sampler-seed", sampler_seed)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise UserError(f"{flag} {value} is out of range; use an integer in [0, {MAX_SEED}]")
    if dataset is not None and dataset not in DATASETS and not Path(dataset).exists():
        raise UserError(
            f"--dataset {dataset}: no such folder or file; use one of "
            + ", ".join(DATASETS)
            + ", or the path of a folder of images or of an .npz file"
        )
    return replace(
        spec,
        dataset=spec.dataset if dataset is None else resolve_dataset(dataset, Path.cwd()),
        seed=spec.seed if seed is None else seed,
        sampler_seed=spec.sampler_seed if sampler_seed is None else sampler_seed,
    )


def spec_from_stored(text: str, *, name: str, study: str, fingerprint: dict[str, Any]) -> StudySpec:
    """The spec a study was created with: its stored file text and the data it runs on."""
    spec = _parse_stored(text, name, study)
    return replace(
        spec,
        dataset=fingerprint.get("dataset", spec.dataset),
        seed=fingerprint.get("seed", spec.seed),
        validation_split=fingerprint.get("validation_split", spec.validation_split),
        sampler_seed=fingerprint.get("sampler_seed", spec.sampler_seed),
    )


@functools.lru_cache(maxsize=64)
def _parse_stored(text: str, name: str, study: str) -> StudySpec:
    """A stored study file, parsed once per process (a baseline trial reads every other
    study's, to find one it may reuse). StudySpec is frozen: the copy is shared."""
    return loads_study(text, name=name, source=f"study {study!r}", stored=True)


def max_epochs(spec: StudySpec, cap: int | None) -> int:
    """The most epochs any trial of the study runs (the pruner's maximum resource)."""
    d = spec.dimension("epochs")
    top = int(d.high) if d.kind == "range" else max(d.choices)
    top = max(top, spec.baseline.epochs)
    return min(top, cap) if cap else top
