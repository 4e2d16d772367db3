"""What a trial leaves behind for the dashboard: figures, notes and its model.

Every completed trial uploads, through Optuna's artifact API, its learning curves (the
baseline's beside them) as an SVG, and writes a markdown note of its metrics with the Δ against
the baseline and its test-set confusion matrix. The study's best ``keep_models`` trials also keep
their trained model as a ``.keras`` study artifact; a better trial replaces the worst one, so
disk use stays bounded. After every trial the study's own note (the leaderboard) and its
"history against the baseline" figure are rewritten.

The artifact store is a folder: ``--artifacts``, else ``$SWEEP_ARTIFACTS``, else beside the
SQLite file (``sweep.db`` -> ``sweep-artifacts/``), else ``./sweep-artifacts``. Workers on
several hosts must see the same folder (a shared volume), as the dashboard must.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import _optuna, models, plots, records, study, tables
from sweep.errors import UserError
from sweep.records import Completed, Scores, TrialRecord
from sweep.storage import study_lock

if TYPE_CHECKING:
    import keras
    import optuna
    from optuna.artifacts import FileSystemArtifactStore


__all__ = ["Publisher", "StudyRefresher", "open_store", "trial_note"]

log = logging.getLogger(__name__)

HISTORY_PLOT_ID = "history-vs-baseline"


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


_ROWS = (  # (label, Scores and TrialRecord field, format, scale of its Δ, unit of its Δ)
    ("validation accuracy", "val_accuracy", tables.pct, 100, " pp"),
    ("test accuracy", "test_accuracy", tables.pct, 100, " pp"),
    ("test loss", "test_loss", lambda v: f"{v:.4f}", 1, ""),
    ("precision (macro)", "precision", tables.pct, 100, " pp"),
    ("recall (macro)", "recall", tables.pct, 100, " pp"),
    ("epochs", "epochs_run", str, 1, ""),
    ("parameters", "n_params", lambda v: f"{v:,}", 1, ""),
    ("training time", "train_seconds", lambda v: f"{v:.1f} s", 1, " s"),
)


def trial_note(
    number: int,
    params: dict[str, Any],
    result: Scores,
    baseline: TrialRecord | None,
    *,
    is_baseline: bool,
    classes: tuple[str, ...] = (),
) -> str:
    """The trial's markdown note: its metrics, the completed baseline's, and the Δ of each;
    then its test-set confusion matrix."""
    title = f"## Trial {number}" + (" — the baseline" if is_baseline else "")
    lines = [title, "", "| metric | this trial | baseline | Δ |", "| --- | ---: | ---: | ---: |"]
    for label, key, fmt, scale, unit in _ROWS:
        mine = getattr(result, key)
        theirs = mine if is_baseline else getattr(baseline, key, None)
        if theirs is None:
            lines.append(f"| {label} | {fmt(mine)} | | |")
            continue
        change = records.delta(mine, theirs) * scale  # type: ignore[operator]
        shown = f"{change:+.2f}{unit}" if isinstance(change, float) else f"{change:+,}{unit}"
        lines.append(f"| {label} | {fmt(mine)} | {fmt(theirs)} | {shown} |")
    if not is_baseline and baseline is None:
        lines += ["", "The baseline had not finished when this trial did: see the study note."]
    lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in params.items())]
    if result.confusion:
        lines += ["", *confusion_table(result.confusion, classes)]
    return "\n".join(lines)


def confusion_table(matrix: list[list[int]], classes: tuple[str, ...] = ()) -> list[str]:
    """A confusion matrix as Markdown: true classes by row, predicted by column.

    A table in the note, not a figure: the dashboard shows it beside the metrics, and drawing
    it with Matplotlib cost a third of what a trial cost beyond training, when measured
    (``python -m benchmarks --only overhead`` prints that cost).
    """
    n = len(matrix)
    names = classes if len(classes) == n else tuple(f"class {i}" for i in range(n))
    return [
        "Test-set confusion matrix (rows: true class; columns: predicted):",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * n,
        *(
            f"| {name} | " + " | ".join(map(str, row)) + " |"
            for name, row in zip(names, matrix, strict=True)
        ),
    ]


class Publisher:
    """A trial's ``on_complete`` hook: upload its figure and note, keep its model if it ranks.

    Called while the trial still runs: Optuna only lets a running trial take artifacts.

    Args:
        store: The artifact store.
        storage: The storage the study was opened with (kept models live in its attrs).
        keep: How many of the study's best models to keep.
        classes: Class names for the confusion matrix (none: numbered).
        input_shape: The images' shape, which a kept model takes (None: the model's own).
    """

    def __init__(
        self,
        store: FileSystemArtifactStore,
        storage: optuna.storages.BaseStorage,
        *,
        keep: int,
        classes: tuple[str, ...] = (),
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.keep = keep
        self.classes = classes
        self.input_shape = input_shape

    def __call__(self, trial: optuna.Trial, done: Completed) -> None:
        import optuna
        from optuna_dashboard import save_note

        is_baseline = records.is_baseline(trial)
        base_history = done.baseline.history if done.baseline is not None else None
        label = f"trial {trial.number}" + (" (baseline)" if is_baseline else "")
        with tempfile.TemporaryDirectory(prefix="sweep-trial-") as tmp:
            path = Path(tmp) / "learning_curves.svg"
            path.write_text(plots.learning_curves(done.scores.history, base_history, title=label))
            optuna.artifacts.upload_artifact(
                artifact_store=self.store, file_path=str(path), study_or_trial=trial,
                mimetype="image/svg+xml",
            )  # fmt: skip
        note = trial_note(
            trial.number,
            done.params.to_dict(),
            done.scores,
            done.baseline,
            is_baseline=is_baseline,
            classes=self.classes,
        )
        save_note(trial, note)
        if self.keep > 0:
            self._keep_model(trial, done.model, done.scores.score)

    def _keep_model(self, trial: optuna.Trial, model: keras.Model, value: float) -> None:
        """Keep this trial's model if it is among the study's ``keep`` best; drop the one it
        displaces. Under the study lock, so workers finishing together keep exactly ``keep``."""
        import optuna
        from optuna.artifacts.exceptions import ArtifactNotFound

        the_study = trial.study
        with study_lock(self.storage, the_study.study_name):
            kept = study.kept_models(self.storage, the_study)
            mine = study.KeptModel(trial.number, value, "")
            ranked = sorted([*kept, mine], key=lambda m: (-m.value, m.trial))[: self.keep]
            if mine not in ranked:
                return
            with tempfile.TemporaryDirectory(prefix="sweep-model-") as tmp:
                path = Path(tmp) / f"trial-{trial.number}.keras"
                models.save_serving(model, path, input_shape=self.input_shape)
                artifact_id = optuna.artifacts.upload_artifact(
                    artifact_store=self.store, file_path=str(path), study_or_trial=the_study,
                    mimetype="application/octet-stream",
                )  # fmt: skip
            ranked = [
                study.KeptModel(m.trial, m.value, artifact_id) if m == mine else m for m in ranked
            ]
            for dropped in kept:
                if dropped not in ranked:
                    with contextlib.suppress(ArtifactNotFound):
                        self.store.remove(dropped.artifact_id)
                    _optuna.forget_artifact(
                        self.storage, _optuna.study_id(the_study), dropped.artifact_id
                    )
            study.set_kept_models(self.storage, the_study, ranked)


# --------------------------------------------------------------------------- the study


class StudyRefresher:
    """Rewrites the study's note (the leaderboard, and the verification once run) and its
    figure of every trial against the baseline.

    As an ``on_trial_end`` hook it rewrites them at most once every ``every_s`` seconds, the
    first time ``every_s`` after it was made, so that short trials do not each pay for a
    study-wide figure (Plotly's import, and the figure); :meth:`flush` writes what is
    pending when the worker stops. Called without a trial, it rewrites them at once.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, *, every_s: float = 30) -> None:
        self.storage = storage
        self.every_s = every_s
        self._last = time.monotonic()
        self._pending: optuna.Study | None = None

    def flush(self) -> None:
        if self._pending is not None:
            self(self._pending)

    def __call__(self, the_study: optuna.Study, trial: object = None) -> None:
        from optuna_dashboard import save_note, save_plotly_graph_object

        if trial is not None and time.monotonic() - self._last < self.every_s:
            self._pending = the_study
            return
        self._last, self._pending = time.monotonic(), None

        trials = records.read_all(the_study)
        body = tables.study_note(
            the_study.study_name,
            study.description(the_study),
            tables.rows(trials),
            study.verification(the_study),
        )
        base = records.baseline(trials)
        figure = plots.history_figure(the_study, None if base is None else base.value)
        with study_lock(self.storage, the_study.study_name):
            save_note(the_study, body)
            save_plotly_graph_object(the_study, figure, graph_object_id=HISTORY_PLOT_ID)
