"""Comparisons against the baseline, read from the storage: the seeds' Table 1 layout."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.errors import UserError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "VERIFICATION_ATTR",
    "Row",
    "csv_rows",
    "format_table",
    "leaderboard",
    "main",
    "markdown_table",
    "render_markdown",
    "render_plain",
    "rows",
    "study_note",
    "summary",
    "write_report",
]


@dataclass(frozen=True)
class Row:
    """One trial as the comparison table shows it."""

    number: int
    state: str
    is_baseline: bool
    params: dict[str, Any]
    val_accuracy: float | None
    test_accuracy: float | None
    test_loss: float | None
    delta_val: float | None  # percentage points against the baseline
    delta_test: float | None
    note: str


def rows(study: optuna.Study) -> list[Row]:
    """Every finished trial, the deltas computed against the completed baseline."""
    from optuna.trial import TrialState

    from sweep.objective import baseline_trial

    base = baseline_trial(study)
    base_val = base.value if base is not None else None
    base_test = base.user_attrs.get("test_accuracy") if base is not None else None
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.WAITING, TrialState.RUNNING):
            continue
        attrs = t.user_attrs
        val = t.value if t.state == TrialState.COMPLETE else None
        test = attrs.get("test_accuracy") if t.state == TrialState.COMPLETE else None
        note = attrs.get("failure", "")
        if t.state == TrialState.PRUNED and not note:
            note = f"pruned after epoch {attrs.get('epochs_run', '?')}"
        out.append(
            Row(
                number=t.number,
                state=t.state.name,
                is_baseline=bool(attrs.get("is_baseline")),
                params=attrs.get("params", t.params),
                val_accuracy=val,
                test_accuracy=test,
                test_loss=attrs.get("test_loss") if test is not None else None,
                delta_val=None if val is None or base_val is None else val - base_val,
                delta_test=None if test is None or base_test is None else test - base_test,
                note=note,
            )
        )
    return out


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def _delta(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.2f}"


_PARAM_COLUMNS = (
    ("family", "family", str),
    ("learning_rate", "lr", lambda v: f"{v:.3g}"),
    ("batch_size", "batch", str),
    ("epochs", "epochs", str),
    ("dropout_conv", "drop", lambda v: f"{v:.2f}"),
    ("dropout_dense", "drop2", lambda v: f"{v:.2f}"),
    ("augment", "aug", lambda v: f"{v:.2f}"),
)


def _cells(table: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The table's header and cells: parameters, val and test accuracy, test loss, Δ in pp."""
    used = [c for c in _PARAM_COLUMNS if any(c[0] in r.params for r in table)]
    if not any(r.params.get("family") == "dropout" for r in table):
        used = [c for c in used if not c[0].startswith("dropout")]
    header = ["#", *(label for _, label, _ in used)]
    header += ["val acc", "test acc", "test loss", "Δval pp", "Δtest pp", "note"]
    lines = []
    for r in table:
        cells = [f"{r.number}{'*' if r.is_baseline else ''}"]
        cells += [fmt(r.params[key]) if key in r.params else "" for key, _, fmt in used]
        loss = "" if r.test_loss is None else f"{r.test_loss:.3f}"
        note = "baseline" if r.is_baseline else r.note or ("" if r.state == "COMPLETE" else r.state)
        cells += [
            _pct(r.val_accuracy),
            _pct(r.test_accuracy),
            loss,
            _delta(r.delta_val),
            _delta(r.delta_test),
            note,
        ]
        lines.append(cells)
    return header, lines


def render_plain(header: list[str], body: list[list[str]]) -> str:
    """Cells as a plain-text table, right-aligned under a rule."""
    lines = [header, *body]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    rendered = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)


def render_markdown(header: list[str], body: list[list[str]]) -> str:
    """Cells as a Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(out)


def format_table(table: list[Row]) -> str:
    """A plain-text table: parameters, validation and test accuracy, test loss, Δ in pp."""
    return render_plain(*_cells(table))


def markdown_table(table: list[Row]) -> str:
    """The same table in Markdown, as the seeds' Table 1."""
    return render_markdown(*_cells(table))


def leaderboard(table: list[Row]) -> list[Row]:
    """Complete trials best first (the baseline among them), then the others by number."""
    done = [r for r in table if r.val_accuracy is not None]
    done.sort(key=lambda r: -(r.val_accuracy or 0.0))
    return done + [r for r in table if r.val_accuracy is None]


VERIFICATION_ATTR = "verification"  # study user attr: sweep.verify's result, in Markdown


def summary(table: list[Row]) -> str:
    """One paragraph: the baseline, the best trial and its lead."""
    base = next((r for r in table if r.is_baseline and r.val_accuracy is not None), None)
    ranked = leaderboard(table)
    best = ranked[0] if ranked and ranked[0].val_accuracy is not None else None
    parts = [f"{len(table)} finished trials."]
    if base is not None:
        parts.append(
            f"Baseline: trial {base.number}, validation {_pct(base.val_accuracy)}, "
            f"test {_pct(base.test_accuracy)}."
        )
    else:
        parts.append("The baseline has not completed yet.")
    if best is not None and not best.is_baseline:
        lead = "" if best.delta_val is None else f" ({_delta(best.delta_val)} pp on validation"
        lead += "" if best.delta_test is None else f", {_delta(best.delta_test)} pp on test)"
        parts.append(f"Best: trial {best.number}, validation {_pct(best.val_accuracy)}{lead}.")
    elif best is not None:
        parts.append("No trial beats the baseline yet.")
    return " ".join(parts)


def study_note(study: optuna.Study) -> str:
    """The study's note in the dashboard: summary, leaderboard and, once run, verification."""
    table = rows(study)
    parts = [
        f"# {study.study_name}",
        study.user_attrs.get("description", ""),
        summary(table),
        "## Leaderboard",
        "Δ columns are percentage points against the baseline (marked `*`). The figure "
        "*history-vs-baseline* below draws every trial against the baseline's value.",
        markdown_table(leaderboard(table)),
    ]
    verification = study.user_attrs.get(VERIFICATION_ATTR)
    if verification:
        parts.append(verification)
    return "\n\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- the report CLI


def csv_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study, one flat dict each, the baseline marked."""
    from optuna.trial import TrialState

    by_number = {r.number: r for r in rows(study)}
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs, row = t.user_attrs, by_number.get(t.number)
        record: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "is_baseline": bool(attrs.get("is_baseline")),
            **{f"param_{k}": v for k, v in attrs.get("params", t.params).items()},
            "val_accuracy": t.value if t.state == TrialState.COMPLETE else None,
        }
        for key in ("test_accuracy", "test_loss", "precision", "recall"):
            record[key] = attrs.get(key) if t.state == TrialState.COMPLETE else None
        for key, delta in (
            ("delta_val_pp", None if row is None else row.delta_val),
            ("delta_test_pp", None if row is None else row.delta_test),
        ):
            record[key] = None if delta is None else 100 * delta
        for key in ("epochs_run", "train_seconds", "n_params", "seed", "worker"):
            record[key] = attrs.get(key)
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


def _plots(study: optuna.Study, out: Path, *, grid: bool) -> tuple[list[str], list[str]]:
    """Write every plot the study supports as PNG and HTML; return the names written and a
    line for each plot that could not be drawn (too few trials, no varying parameter)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # optuna.visualization.matplotlib draws through pyplot
    import optuna
    from matplotlib import pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator

    from sweep import plots
    from sweep.objective import baseline_trial

    base = baseline_trial(study)
    base_value = None if base is None else base.value
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    written, skipped = [], []

    def history() -> tuple[Any, Any]:
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target_name="val accuracy"
        )
        if base_value is not None:
            ax.axhline(base_value, label="baseline", **plots.BASELINE_STYLE)
            ax.legend()
        return ax.figure, plots.history_figure(study, base_value)

    def importances() -> tuple[Any, Any]:
        # PED-ANOVA, as optuna-dashboard uses: fANOVA would need scikit-learn.
        vis, mpl = optuna.visualization, optuna.visualization.matplotlib
        evaluator = PedAnovaImportanceEvaluator()
        return (
            mpl.plot_param_importances(
                study, evaluator=evaluator, target_name="val accuracy"
            ).figure,
            vis.plot_param_importances(study, evaluator=evaluator, target_name="val accuracy"),
        )

    def parallel() -> tuple[Any, Any]:
        vis, mpl = optuna.visualization, optuna.visualization.matplotlib
        return (
            mpl.plot_parallel_coordinate(study, target_name="val accuracy").figure,
            vis.plot_parallel_coordinate(study, target_name="val accuracy"),
        )

    def heatmap() -> tuple[Any, Any]:
        points = [(t.params, t.value) for t in complete if t.value is not None]
        levels = {k: len({p.get(k) for p, _ in points}) for k in complete[0].params}
        dims = sorted(levels, key=lambda k: -levels[k])[:2]
        return plots.grid_heatmap(points, (dims[0], dims[1]))

    values = {k: {t.params.get(k) for t in complete} for t in complete for k in t.params}
    varying = {k for k, seen in values.items() if len(seen) > 1}
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


def write_report(study: optuna.Study, out: Path) -> list[Path]:
    """Write ``report.md``, ``trials.csv`` and the plots into ``out``; return the files."""
    from sweep.study import stored_spec

    spec = stored_spec(study)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(csv_rows(study), out / "trials.csv")
    written, skipped = _plots(study, out, grid=spec.sampler.name == "grid")
    table = rows(study)
    parts = [
        f"# Study `{study.study_name}`",
        study.user_attrs.get("description", ""),
        summary(table),
        "## Trials",
        "Best first; Δ columns are percentage points against the baseline (marked `*`). "
        "All trials, with every metric: [trials.csv](trials.csv).",
        markdown_table(leaderboard(table)),
        "## Plots",
        *(_plot_section(name) for name in written),
    ]
    if skipped:
        parts.append("Not drawn: " + "; ".join(skipped) + ".")
    if verification := study.user_attrs.get(VERIFICATION_ATTR):
        parts.append(verification)
    (out / "report.md").write_text("\n\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    files = ["report.md", "trials.csv", *(f"{n}.{ext}" for n in written for ext in ("png", "html"))]
    return [out / f for f in files]


def parser() -> argparse.ArgumentParser:
    from sweep import cli

    p = cli.Parser(
        prog="python -m sweep.report",
        description="Write a study's report: Markdown, a CSV of every trial with the baseline "
        "marked, and plots (PNG and interactive HTML) drawn against the baseline.",
    )
    cli.add_existing_study_options(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    return p


def _main(args: argparse.Namespace) -> int:
    from sweep import cli

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder")
    study, _ = cli.open_existing(args)
    for path in write_report(study, args.out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    from sweep import cli

    return cli.run_main(parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())
