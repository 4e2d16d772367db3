"""The Python API: what every command does, as typed functions (``import sweep``).

Run a study from a notebook or a script, with one's own data and model, and read it back::

    import sweep

    results = sweep.run("quickstart", storage="sqlite:///sweep.db")
    results            # in a notebook: the comparison table, every trial against the baseline
    results.best       # the best trial's record
    sweep.export("quickstart", "best.keras", storage="sqlite:///sweep.db")

The commands (:mod:`sweep.commands`) parse their options, call these and print. Nothing here
imports TensorFlow until a model trains.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import (
    artifacts,
    budget,
    catalog,
    data,
    records,
    reporting,
    runner,
    sources,
    study,
    tables,
    verification,
)
from sweep.config import ARRAYS_PREFIX, StudySpec, load_study
from sweep.errors import UserError
from sweep.records import TrialRecord
from sweep.run import Overrides, RunOptions, default_artifacts, resolve
from sweep.stop import StopEvent
from sweep.storage import check_url, default_url, in_memory, open_storage, redact

if TYPE_CHECKING:
    import optuna

__all__ = [
    "Exported",
    "Results",
    "export",
    "plan",
    "report",
    "results",
    "run",
    "studies",
    "verify",
]

log = logging.getLogger("sweep")

DataArg = str | os.PathLike[str] | sources.Arrays | Sequence[Any] | Mapping[str, Any] | None
"""The data of :func:`run`: a built-in name or a path (a folder of images, an ``.npz``), the
four arrays ``(x_train, y_train, x_test, y_test)`` as a tuple or a mapping (``class_names``
may be a key too), or None for the study file's own ``dataset``."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Results:
    """A study's trials as the comparison table shows them: every trial against the baseline.

    ``str(results)`` is the table the command prints; in a notebook it renders as an HTML
    table; :meth:`to_pandas` gives one row per trial (pandas installed).
    """

    study_name: str
    storage: str  # the URL, its password hidden
    trials: tuple[TrialRecord, ...]
    budget: int | None = None
    finished: int = 0  # trials that count against the budget
    interrupted: bool = False
    failed_workers: tuple[str, ...] = ()

    @property
    def rows(self) -> list[tables.Row]:
        """The finished trials, each with its Δs against the completed baseline."""
        return tables.rows(list(self.trials))

    @property
    def baseline(self) -> TrialRecord | None:
        return records.baseline(list(self.trials))

    @property
    def best(self) -> TrialRecord | None:
        """The completed trial with the highest score (the baseline included)."""
        done = [t for t in self.trials if t.complete and t.value is not None]
        return max(done, key=lambda t: (t.value, -t.number)) if done else None

    @property
    def complete(self) -> bool:
        """Whether the study has spent its budget."""
        return self.budget is not None and self.finished >= self.budget

    def __str__(self) -> str:
        return tables.format_table(self.rows)

    def _repr_html_(self) -> str:
        header, body = tables.cells(self.rows)
        return (
            f"<p>study <code>{_escape(self.study_name)}</code> in <code>"
            f"{_escape(self.storage)}</code>: {self.finished} of {self.budget} trials "
            "(<code>*</code> the baseline; Δ in percentage points)</p>"
            + tables.render_html(header, body)
        )

    def to_pandas(self) -> Any:
        """One row per trial (params, scores, Δs in pp, the baseline marked), as a
        ``pandas.DataFrame``.

        Raises:
            UserError: pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:
            raise UserError("to_pandas needs pandas; pip install pandas") from None
        return pd.DataFrame(reporting.csv_rows(list(self.trials)))


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _results(the_study: optuna.Study, url: str, run: RunOptions | None, **kw: Any) -> Results:
    trials = the_study.get_trials(deepcopy=False)
    return Results(
        study_name=the_study.study_name,
        storage=redact(url),
        trials=tuple(records.read(t) for t in trials),
        budget=None if run is None else run.budget,
        finished=budget.finished(the_study),
        **kw,
    )


# --------------------------------------------------------------------------- running


def storage_url(storage: str | None, *, write: bool = True) -> str:
    """``storage``, else ``$SWEEP_STORAGE``, else the embedded default, checked (to be written
    unless ``write`` is false: report, export and the dashboard only read).

    Raises:
        UserError: a bad URL, a server that does not answer or may not be written, a SQLite
            file that is not a database, or an in-memory database.
    """
    url = storage or default_url()
    check_url(url, write=write)
    if in_memory(url):
        raise UserError(
            f"storage {url} is an in-memory database: it lives and dies with this one process, "
            "so no worker, resume or dashboard would see the study; use a file, such as "
            "sqlite:///sweep.db"
        )
    return url


def _spec(study_arg: str | os.PathLike[str] | StudySpec) -> StudySpec:
    if isinstance(study_arg, StudySpec):
        return study_arg
    spec = load_study(os.fspath(study_arg))
    if spec.sampler.name == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise UserError(
                f"{spec.source}: sampler.name: the gp sampler needs PyTorch; "
                "pip install torch, or use tpe"
            )
    return spec


def plan(
    study_arg: str | os.PathLike[str] | StudySpec,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    dataset: str | None = None,
    subset: int | None = None,
    max_epochs: int | None = None,
    seed: int | None = None,
    sampler_seed: int | None = None,
    backend: str | None = None,
    data_dir: Path | None = None,
    artifacts_dir: Path | None = None,
    replace_study_file: bool = False,
) -> RunOptions:
    """The run of a study (a name, a study file, or a :class:`~sweep.config.StudySpec`)
    with these overrides, checked; reads no data and writes nothing.

    Raises:
        UserError: naming the first option or study-file key that is wrong.
    """
    spec = _spec(study_arg)
    said = Overrides(
        n_trials=n_trials,
        dataset=dataset,
        subset=subset,
        max_epochs=max_epochs,
        seed=seed,
        sampler_seed=sampler_seed,
        backend=backend,
        data_dir=data_dir,
        artifacts=artifacts_dir,
        replace_file=replace_study_file,
    )
    name = spec.name if study_name is None else study_name
    return resolve(spec, url=storage or default_url(), name=name, said=said)


def _arrays(data: Any, class_names: Sequence[str] | None) -> sources.Arrays:
    where = "the arrays given to sweep.run"
    if isinstance(data, sources.Arrays):
        return data
    if isinstance(data, Mapping):
        unknown = set(data) - {"x_train", "y_train", "x_test", "y_test", "class_names"}
        if unknown:
            raise UserError(
                f"{where}: unknown keys {', '.join(sorted(unknown))}; give x_train, y_train, "
                "x_test, y_test and optionally class_names"
            )
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
        if missing:
            raise UserError(f"{where}: {', '.join(missing)} missing")
        class_names = class_names or data.get("class_names")
        data = (data["x_train"], data["y_train"], data["x_test"], data["y_test"])
    if len(data) != 4:
        raise UserError(
            f"{where}: expected (x_train, y_train, x_test, y_test), got {len(data)} items"
        )
    x_train, y_train, x_test, y_test = data
    return sources.check_arrays(x_train, y_train, x_test, y_test, class_names, source=where)


def run(
    study_arg: str | os.PathLike[str] | StudySpec,
    *,
    storage: str | None = None,
    data: DataArg = None,
    class_names: Sequence[str] | None = None,
    workers: int | None = None,
    gpus: str | None = None,
    trials_per_gpu: int | None = None,
    gpu_memory: int | None = None,
    oversubscribe: bool = False,
    progress: bool = True,
    stop: StopEvent | None = None,
    **overrides: Any,
) -> Results:
    """Create or resume a study and run its trials until its budget is spent.

    Args:
        study_arg: A study name (``sweep.studies()``), a study file's path, or a spec.
        storage: The storage URL (default: ``$SWEEP_STORAGE``, else ``sqlite:///sweep.db``).
        data: The data, if not the study file's: a built-in name or a path, or arrays (see
            :data:`DataArg`). Arrays are written once to the artifact folder
            (``datasets/<sha256>.npz``), where every worker of the study reads them.
        class_names: The arrays' class names (default: ``"0"``, ``"1"``, ...).
        workers: Worker processes on this machine (default 1: the trials run here).
        gpus: GPUs to use (``"0,1"`` or ``"all"``), one worker per GPU times
            ``trials_per_gpu``; ``gpu_memory`` caps each worker's GPU memory in MB.
        progress: Show a progress bar (tqdm's: a widget in a notebook).
        stop: Set it to stop the run; running trials are requeued.
        **overrides: Any keyword of :func:`plan` (``n_trials``, ``subset``, ``max_epochs``,
            ``seed``, ``study_name``, ``backend``, ``artifacts_dir``, ...).

    Returns:
        The study's :class:`Results`.

    Raises:
        UserError: bad input, found before anything is written.
    """
    arrays = None
    if data is not None and not isinstance(data, str | os.PathLike):
        arrays = _arrays(data, class_names)
    elif data is not None:
        overrides["dataset"] = os.fspath(data)
    url = storage_url(storage)
    the_run = plan(study_arg, storage=url, **overrides)
    if arrays is not None:
        digest = sources.content_hash(arrays)
        spec = replace(the_run.spec, dataset=f"{ARRAYS_PREFIX}{digest}")
        the_run = replace(the_run, spec=spec, data_sha256=digest)
    where = runner.placements(
        workers=workers,
        gpus=gpus,
        trials_per_gpu=trials_per_gpu,
        gpu_memory=gpu_memory,
        oversubscribe=oversubscribe,
    )
    the_run, arrays = runner.prepare(the_run, arrays=arrays)
    study.check_resumable(the_run)
    launched = runner.launch(
        the_run, where, stop=stop or StopEvent(), progress=progress, arrays=arrays
    )
    return _results(
        launched.study,
        url,
        the_run,
        interrupted=launched.interrupted,
        failed_workers=launched.failed,
    )


# --------------------------------------------------------------------------- reading back


def _existing(
    name: str,
    storage: str | None,
    *,
    data_dir: Path | None = None,
    artifacts_dir: Path | None = None,
    write: bool = False,
) -> tuple[optuna.Study, optuna.storages.RDBStorage, RunOptions]:
    """Study ``name``, found in the storage before it is opened; opened to ``write`` (verify's
    companion study) or only to read, which creates nothing beside a SQLite file."""
    import optuna

    url = storage_url(storage, write=write)
    the_run = study.stored_run(
        url,
        name,
        data_dir=data_dir,
        artifacts=(artifacts_dir or default_artifacts(url)).absolute(),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = open_storage(url, check=False, create=write)
    return optuna.load_study(study_name=name, storage=opened), opened, the_run


def results(name: str, *, storage: str | None = None) -> Results:
    """The trials of study ``name`` as they are now; trains and writes nothing.

    Raises:
        UserError: no such study, or one that sweep did not make.
    """
    the_study, _, the_run = _existing(name, storage)
    return _results(the_study, storage_url(storage, write=False), the_run)


def report(name: str, *, out: str | os.PathLike[str], storage: str | None = None) -> list[Path]:
    """Write study ``name``'s report into the folder ``out``: Markdown, a CSV of every trial,
    plots against the baseline. Returns the files written."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; give a folder")
    the_study, _, the_run = _existing(name, storage)
    # Written whole into a folder of its own beside ``out``, then moved in: a report that
    # cannot be finished (a full disk, a folder it may not write) leaves nothing behind.
    base = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    try:
        staging = Path(tempfile.mkdtemp(prefix=".sweep-report-", dir=base))
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot make the folder ({exc.strerror})") from None
    try:
        written = reporting.write_report(
            the_study, staging, grid=the_run.spec.sampler.name == "grid"
        )
        folder.mkdir(parents=True, exist_ok=True)
        for each in staging.iterdir():
            each.replace(folder / each.name)
    except OSError as exc:
        raise UserError(
            f"--out {folder}: cannot write the report ({exc.strerror or exc}); free some space, "
            "or pick a folder this user can write"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / p.relative_to(staging) for p in written]


def verify(
    name: str,
    *,
    storage: str | None = None,
    top: int = 3,
    repeats: int = 5,
    alpha: float = 0.05,
    data_dir: Path | None = None,
    artifacts_dir: Path | None = None,
) -> verification.Verification:
    """Re-train the baseline and the ``top`` best trials ``repeats`` times with fresh seeds;
    is each lead over the baseline real? See :mod:`sweep.verification`."""
    verification.check(repeats=repeats, alpha=alpha)
    the_study, opened, the_run = _existing(
        name, storage, data_dir=data_dir, artifacts_dir=artifacts_dir, write=True
    )
    return verification.verify(the_study, opened, the_run, top=top, repeats=repeats, alpha=alpha)


@dataclass(frozen=True)
class Exported:
    """A model :func:`export` wrote: its file, the ``.json`` beside it, which trial."""

    path: Path
    about: Path
    trial: int
    val_accuracy: float | None


def export(
    name: str,
    out: str | os.PathLike[str],
    *,
    trial: int | None = None,
    storage: str | None = None,
    artifacts_dir: Path | None = None,
) -> Exported:
    """Write the best trial's trained model (or trial ``trial``'s) to the ``.keras`` file
    ``out``, and beside it ``<out>.json``: its class names, input shape, params and scores.

    The model takes images as they are (pixel values 0-255, the data's shape) and returns the
    class probabilities; it is compiled with the optimizer it trained with. No TensorFlow is
    loaded: the file is copied as it was saved.

    Raises:
        UserError: a bad file name, no such study or trial, or a model not kept.
    """
    import optuna

    path = Path(out)
    if path.suffix != ".keras":
        raise UserError(f"--out {path}: the file must end in .keras (Keras 3's format)")
    sidecar = path.with_suffix(".json")
    for target in (path, sidecar):
        if target.exists():
            raise UserError(f"--out {path}: {target} exists; remove it or pick another name")
    if not path.resolve().parent.is_dir():
        raise UserError(f"--out {path}: folder {path.parent} does not exist")
    the_study, opened, the_run = _existing(name, storage, artifacts_dir=artifacts_dir)
    kept = {m.trial: m for m in study.kept_models(opened, the_study)}
    if trial is None:
        try:
            number = the_study.best_trial.number
        except ValueError:
            raise UserError(f"study {the_study.study_name!r} has no completed trial yet") from None
    else:
        number = trial
    if number not in kept:
        which = ", ".join(str(n) for n in sorted(kept)) or "none"
        raise UserError(
            f"study {the_study.study_name!r} kept no model of trial {number} (it keeps the best "
            f"keep_models trials' models; kept: {which}); pass --trial with one of those"
        )
    store = artifacts.open_store(the_run.artifacts, create=False)
    record = records.read(the_study.trials[number])
    info = study.data_info(the_study) or _builtin_info(the_run.spec.dataset)
    about = {
        "study": the_study.study_name,
        "trial": number,
        "class_names": info.get("class_names"),
        "input_shape": info.get("input_shape"),
        "dataset": the_run.spec.dataset,
        "params": record.params.to_dict() if record.params is not None else None,
        "val_accuracy": record.value,
        "test_accuracy": record.test_accuracy,
    }
    try:
        optuna.artifacts.download_artifact(
            artifact_store=store, artifact_id=kept[number].artifact_id, file_path=str(path)
        )
        sidecar.write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    except optuna.artifacts.exceptions.ArtifactNotFound:
        raise UserError(
            f"the model of trial {number} is missing from the artifact folder; pass "
            "--artifacts DIR (or set $SWEEP_ARTIFACTS) to the folder the workers wrote to"
        ) from None
    except OSError as exc:
        path.unlink(missing_ok=True)  # no half-written model left behind
        sidecar.unlink(missing_ok=True)
        raise UserError(f"--out {path}: cannot write it ({exc.strerror})") from None
    return Exported(path, sidecar, number, kept[number].value)


def _builtin_info(dataset: str) -> dict[str, Any]:
    """What a study made before its data's shape and classes were stored can still say."""
    if dataset not in data.DATA_INFO:
        return {}
    shape, n = data.DATA_INFO[dataset]
    names = data.CIFAR10_CLASSES if dataset == "cifar10" else ()
    return {"input_shape": list(shape), "class_names": list(names) or None, "classes": n}


def studies() -> list[tuple[str, str, Path]]:
    """Every study file found (``./studies`` first, then the packaged ones): its name, its
    description and its path."""
    return catalog.describe()
