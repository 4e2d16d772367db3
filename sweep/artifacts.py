"""What a trial leaves behind for the dashboard: figures, notes and its model.

Every completed trial uploads, through Optuna's artifact API, its learning curves (the
baseline's beside them) and its test-set confusion matrix as PNG, and writes a markdown note of
its metrics with the Δ against the baseline. The study's best ``keep_models`` trials also keep
their trained model as a ``.keras`` study artifact; a better trial replaces the worst one, so
disk use stays bounded. After every trial the study's own note (the leaderboard) and its
"history against the baseline" figure are rewritten.

The artifact store is a folder: ``--artifacts``, else ``$SWEEP_ARTIFACTS``, else beside the
SQLite file (``sweep.db`` -> ``sweep-artifacts/``), else ``./sweep-artifacts``. Workers on
several hosts must see the same folder (a shared volume), as the dashboard must.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import UserError

if TYPE_CHECKING:
    import keras
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from sweep.objective import Scores

__all__ = [
    "KEPT_ATTR",
    "KeptModel",
    "default_dir",
    "kept_models",
    "open_store",
    "publish_trial",
    "refresh_study",
    "trial_note",
]

log = logging.getLogger(__name__)

KEPT_ATTR = "sweep:kept_models"  # study system attr: [{"trial", "value", "artifact_id"}]
_ARTIFACT_PREFIX = "artifacts:"  # where Optuna keeps an artifact's metadata
HISTORY_PLOT_ID = "history-vs-baseline"


def default_dir(url: str) -> Path:
    """Where the artifacts of the study storage ``url`` go unless told otherwise."""
    from sqlalchemy.engine import make_url

    if env := os.environ.get("SWEEP_ARTIFACTS"):
        return Path(env)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        db = Path(parsed.database)
        return db.with_name(f"{db.stem}-artifacts")
    return Path("sweep-artifacts")


def open_store(path: Path, *, create: bool = True) -> FileSystemArtifactStore:
    """The artifact store in folder ``path``.

    Raises:
        UserError: the folder cannot be made or written, or (``create=False``) does not exist.
    """
    from optuna.artifacts import FileSystemArtifactStore

    if not create and not path.is_dir():
        raise UserError(
            f"artifact folder {path} does not exist; pass --artifacts DIR (or set "
            "$SWEEP_ARTIFACTS) to the folder the workers wrote to"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {path}")
    except OSError as exc:
        raise UserError(f"cannot use artifact folder {path}: {exc}; pass --artifacts DIR") from None
    return FileSystemArtifactStore(str(path))


# --------------------------------------------------------------------------- one trial


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def trial_note(
    number: int, params: dict[str, Any], result: Scores, baseline: optuna.trial.FrozenTrial | None
) -> str:
    """The trial's markdown note: its metrics, the baseline's, and the Δ of each."""
    is_baseline = baseline is None
    base = {} if baseline is None else baseline.user_attrs
    rows = (
        ("validation accuracy", result.val_accuracy, "val_accuracy", _pct, 100, " pp"),
        ("test accuracy", result.test_accuracy, "test_accuracy", _pct, 100, " pp"),
        ("test loss", result.test_loss, "test_loss", lambda v: f"{v:.4f}", 1, ""),
        ("precision (macro)", result.precision, "precision", _pct, 100, " pp"),
        ("recall (macro)", result.recall, "recall", _pct, 100, " pp"),
        ("epochs", result.epochs_run, "epochs_run", str, 1, ""),
        ("parameters", result.n_params, "n_params", lambda v: f"{v:,}", 1, ""),
        ("training time", result.train_seconds, "train_seconds", lambda v: f"{v:.1f} s", 1, " s"),
    )
    title = f"## Trial {number}" + (" — the baseline" if is_baseline else "")
    lines = [title, "", "| metric | this trial | baseline | Δ |", "| --- | ---: | ---: | ---: |"]
    for label, mine, key, fmt, scale, unit in rows:
        theirs = mine if is_baseline else base.get(key)
        if theirs is None:
            lines.append(f"| {label} | {fmt(mine)} | | |")
            continue
        delta = (mine - theirs) * scale
        shown = f"{delta:+.2f}{unit}" if isinstance(delta, float) else f"{delta:+,}{unit}"
        lines.append(f"| {label} | {fmt(mine)} | {fmt(theirs)} | {shown} |")
    if not is_baseline and not base:
        lines += ["", "The baseline had not finished when this trial did: see the study note."]
    lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in params.items())]
    return "\n".join(lines)


def publish_trial(
    trial: optuna.Trial,
    store: FileSystemArtifactStore,
    *,
    params: dict[str, Any],
    result: Scores,
    model: keras.Model,
    baseline: optuna.trial.FrozenTrial | None,
    keep: int,
    classes: tuple[str, ...] = (),
) -> None:
    """Upload a completed trial's figures and note, and keep its model if it ranks.

    Called while the trial still runs: Optuna only lets a running trial take artifacts.
    ``baseline`` is the completed baseline trial, None if this trial is the baseline or the
    baseline has not finished.
    """
    import numpy as np
    import optuna
    from optuna_dashboard import save_note

    from sweep import plots

    is_baseline = bool(trial.user_attrs.get("is_baseline"))
    base_history = baseline.user_attrs.get("history") if baseline is not None else None
    label = f"trial {trial.number}" + (" (baseline)" if is_baseline else "")
    with tempfile.TemporaryDirectory(prefix="sweep-trial-") as tmp:
        figures = {
            "learning_curves.png": plots.learning_curves(
                result.history, base_history, title=f"{label}: learning curves"
            ),
            "confusion_matrix.png": plots.confusion_figure(
                np.asarray(result.confusion),
                classes=classes,
                title=f"{label}: test-set confusion matrix",
            ),
        }
        for name, figure in figures.items():
            path = plots.save_png(figure, Path(tmp) / name)
            optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial,
                mimetype="image/png",
            )  # fmt: skip
    save_note(trial, trial_note(trial.number, params, result, None if is_baseline else baseline))
    if keep > 0:
        _keep_model(trial, store, model, result.val_accuracy, keep)


# --------------------------------------------------------------------------- kept models


@dataclass(frozen=True)
class KeptModel:
    trial: int
    value: float
    artifact_id: str


def kept_models(study: optuna.Study) -> list[KeptModel]:
    """The models the study keeps, best first."""
    raw = study._storage.get_study_system_attrs(study._study_id).get(KEPT_ATTR) or []
    return [KeptModel(**k) for k in raw]


def _keep_model(
    trial: optuna.Trial, store: FileSystemArtifactStore, model: keras.Model, value: float, k: int
) -> None:
    """Keep this trial's model if it is among the study's ``k`` best; drop the one it
    displaces. Under the study lock, so workers finishing together keep exactly ``k``."""
    import optuna
    from optuna.artifacts.exceptions import ArtifactNotFound

    from sweep.models import serving_model
    from sweep.storage import study_lock

    study = trial.study
    storage, study_id = study._storage, study._study_id
    with study_lock(storage, study.study_name):
        kept = kept_models(study)
        ranked = sorted(
            [*kept, KeptModel(trial.number, value, "")], key=lambda m: (-m.value, m.trial)
        )[:k]
        if all(m.trial != trial.number for m in ranked):
            return
        with tempfile.TemporaryDirectory(prefix="sweep-model-") as tmp:
            path = Path(tmp) / f"trial-{trial.number}.keras"
            serving_model(model).save(path)
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=study,
                mimetype="application/octet-stream",
            )  # fmt: skip
        ranked = [
            KeptModel(m.trial, m.value, artifact_id) if m.trial == trial.number else m
            for m in ranked
        ]
        for dropped in kept:
            if dropped not in ranked:
                with contextlib.suppress(ArtifactNotFound):
                    store.remove(dropped.artifact_id)
                # What optuna-dashboard's "delete" writes: the artifact is listed no more.
                storage.set_study_system_attr(
                    study_id, _ARTIFACT_PREFIX + dropped.artifact_id, json.dumps(None)
                )
        storage.set_study_system_attr(study_id, KEPT_ATTR, [m.__dict__ for m in ranked])


# --------------------------------------------------------------------------- the study


def refresh_study(study: optuna.Study) -> None:
    """Rewrite the study's note (the leaderboard, and the verification once run) and its
    figure of every trial against the baseline. Called after every trial."""
    from optuna_dashboard import save_note, save_plotly_graph_object

    from sweep import plots, report
    from sweep.objective import baseline_trial
    from sweep.storage import study_lock

    body = report.study_note(study)
    base = baseline_trial(study)
    figure = plots.history_figure(study, None if base is None else base.value)
    with study_lock(study._storage, study.study_name):
        save_note(study, body)
        save_plotly_graph_object(study, figure, graph_object_id=HISTORY_PLOT_ID)
