"""Reports (``sweep report``, :func:`sweep.report`): Markdown, a CSV of every trial with the
baseline marked, and plots (PNG and interactive HTML) drawn against the baseline."""

from __future__ import annotations

import collections
import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import plots, records, study, tables
from sweep.records import TrialRecord

if TYPE_CHECKING:
    import optuna

__all__ = ["csv_rows", "write_report"]


def csv_rows(trials: list[TrialRecord]) -> list[dict[str, Any]]:
    """Every trial of the study, one flat dict each, the baseline marked, Δ in pp."""
    by_number = {r.number: r for r in tables.rows(trials)}
    out = []
    for t in trials:
        row = by_number.get(t.number)
        params = t.params.to_dict() if t.params is not None else {}
        record: dict[str, Any] = {
            "number": t.number,
            "state": t.state,
            "is_baseline": t.is_baseline,
            **{f"param_{k}": v for k, v in params.items()},
            "val_accuracy": t.value,
        }
        for key in ("test_accuracy", "test_loss", "precision", "recall"):
            record[key] = getattr(t, key) if t.complete else None
        for key, change in (
            ("delta_val_pp", None if row is None else row.delta_val),
            ("delta_test_pp", None if row is None else row.delta_test),
        ):
            record[key] = None if change is None else 100 * change
        for key in ("epochs_run", "train_seconds", "n_params", "seed", "worker"):
            record[key] = getattr(t, key)
        record["note"] = "" if row is None else row.note
        out.append(record)
    return out


def _write_csv(records: list[dict[str, Any]], path: Path) -> None:
    import csv

    columns = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def _plots(
    the_study: optuna.Study, base_value: float | None, out: Path, *, grid: bool
) -> tuple[list[str], list[str]]:
    """Write every plot the study supports as PNG and HTML; return the names written and a
    line for each plot that could not be drawn (too few trials, no varying parameter)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # optuna.visualization.matplotlib draws through pyplot
    import optuna
    from matplotlib import pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator

    complete = the_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    written, skipped = [], []

    def history() -> tuple[Any, Any]:
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            the_study, target_name="val accuracy"
        )
        if base_value is not None:
            ax.axhline(base_value, label="baseline", **plots.BASELINE_STYLE)
            ax.legend()
        return ax.figure, plots.history_figure(the_study, base_value)

    def importances() -> tuple[Any, Any]:
        # PED-ANOVA, as optuna-dashboard uses: fANOVA would need scikit-learn.
        vis, mpl = optuna.visualization, optuna.visualization.matplotlib
        evaluator = PedAnovaImportanceEvaluator()
        return (
            mpl.plot_param_importances(
                the_study, evaluator=evaluator, target_name="val accuracy"
            ).figure,
            vis.plot_param_importances(the_study, evaluator=evaluator, target_name="val accuracy"),
        )

    def parallel() -> tuple[Any, Any]:
        vis, mpl = optuna.visualization, optuna.visualization.matplotlib
        return (
            mpl.plot_parallel_coordinate(the_study, target_name="val accuracy").figure,
            vis.plot_parallel_coordinate(the_study, target_name="val accuracy"),
        )

    def heatmap() -> tuple[Any, Any]:
        points = [(t.params, t.value) for t in complete if t.value is not None]
        levels = {k: len({p.get(k) for p, _ in points}) for k in complete[0].params}
        dims = sorted(levels, key=lambda k: -levels[k])[:2]
        return plots.grid_heatmap(points, (dims[0], dims[1]))

    values: dict[str, set[Any]] = {}
    for t in complete:
        for k, v in t.params.items():
            values.setdefault(k, set()).add(v)
    # A parameter some trials lack (a family's own) varies between them and the others too.
    having = collections.Counter(k for t in complete for k in t.params)
    varying = {k for k, seen in values.items() if len(seen) + (having[k] < len(complete)) > 1}
    makers: dict[str, tuple[Any, str | None]] = {
        "optimization_history": (history, None),
        "param_importances": (
            importances,
            None if len(complete) >= 2 and varying else "needs 2 complete trials that differ",
        ),
        "parallel_coordinates": (
            parallel,
            None if len(complete) >= 2 and varying else "needs 2 complete trials that differ",
        ),
    }
    if grid:
        makers["grid_heatmap"] = (
            heatmap,
            None if len(varying) >= 2 else "needs 2 grid dimensions with complete trials",
        )
    for name, (make, why_not) in makers.items():
        if why_not is not None:
            skipped.append(f"{name}: {why_not}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            static, interactive = make()
        plots.save_png(static, out / f"{name}.png")
        plt.close(static)
        interactive.write_html(out / f"{name}.html", include_plotlyjs="directory")
        written.append(name)
    return written, skipped


def _plot_section(name: str) -> str:
    title = name.replace("_", " ")
    return f"### {title}\n\n![{title}]({name}.png) ([interactive]({name}.html))"


def _data_section(the_study: optuna.Study) -> list[str]:
    """The data's image shape and class names (each trial's note in the dashboard has its
    confusion matrix by those names)."""
    info = study.data_info(the_study)
    names = tuple(info.get("class_names") or ())
    if not names:
        return []
    shape = "×".join(str(n) for n in info.get("input_shape") or ())
    return ["## Data", f"Images of {shape}, {len(names)} classes: " + ", ".join(names) + "."]


def _read_once(the_study: optuna.Study) -> optuna.Study:
    """``the_study`` with its trials read once: Optuna's plots read them again for each plot
    and more (15 reads of every trial for one report, seconds each on a long study)."""
    every = the_study.get_trials(deepcopy=False)

    def trials(deepcopy: bool = True, states: Any = None, use_cache: bool = True) -> list[Any]:
        chosen = [t for t in every if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen

    frozen = copy.copy(the_study)
    frozen.get_trials = trials  # type: ignore[method-assign]
    frozen._get_trials = trials  # type: ignore[method-assign]
    return frozen


def write_report(the_study: optuna.Study, out: Path, *, grid: bool) -> list[Path]:
    """Write ``report.md``, ``trials.csv`` and the plots into ``out``; return the files."""
    the_study = _read_once(the_study)
    trials = records.read_all(the_study)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(csv_rows(trials), out / "trials.csv")
    base = records.baseline(trials)
    written, skipped = _plots(the_study, None if base is None else base.value, out, grid=grid)
    table = tables.rows(trials)
    parts = [
        f"# Study `{the_study.study_name}`",
        study.description(the_study),
        tables.summary(table),
        "## Trials",
        "Best first; Δ columns are percentage points against the baseline (marked `*`). "
        "All trials, with every metric: [trials.csv](trials.csv).",
        tables.markdown_table(tables.leaderboard(table)),
        "## Plots",
        *(_plot_section(name) for name in written),
    ]
    if skipped:
        parts.append("Not drawn: " + "; ".join(skipped) + ".")
    parts += _data_section(the_study)
    parts.append(study.verification(the_study))
    (out / "report.md").write_text("\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    files = ["report.md", "trials.csv", *(f"{n}.{ext}" for n in written for ext in ("png", "html"))]
    return [out / f for f in files]
