"""Comparisons against the baseline as tables, in the layout of the reports' Table 1.

Pure: the rows are built from :class:`~sweep.records.TrialRecord` values, so the launcher's
table, the dashboard's study note, ``sweep report`` and ``sweep verify`` all show the same
numbers. Deltas come from :func:`sweep.records.delta` and are shown in percentage points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweep import records
from sweep.records import TrialRecord

__all__ = [
    "Row",
    "cells",
    "format_table",
    "leaderboard",
    "markdown_table",
    "pct",
    "pp",
    "render_html",
    "render_markdown",
    "render_plain",
    "rows",
    "study_note",
    "summary",
]


@dataclass(frozen=True)
class Row:
    """One finished trial as the comparison table shows it."""

    record: TrialRecord
    params: dict[str, Any]
    delta_val: float | None  # fraction, against the completed baseline
    delta_test: float | None
    note: str

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def is_baseline(self) -> bool:
        return self.record.is_baseline

    @property
    def state(self) -> str:
        return self.record.state

    @property
    def val_accuracy(self) -> float | None:
        return self.record.value

    @property
    def test_accuracy(self) -> float | None:
        return self.record.test_accuracy if self.record.complete else None


def rows(trials: list[TrialRecord]) -> list[Row]:
    """Every finished trial, the deltas computed against the completed baseline."""
    base = records.baseline(trials)
    out = []
    for r in trials:
        if r.state in ("WAITING", "RUNNING"):
            continue
        note = r.failure or ""
        if r.state == "PRUNED" and not note:
            note = f"pruned after epoch {r.epochs_run if r.epochs_run is not None else '?'}"
        test = r.test_accuracy if r.complete else None
        out.append(
            Row(
                record=r,
                params=r.params.to_dict() if r.params is not None else {},
                delta_val=records.delta(r.value, None if base is None else base.value),
                delta_test=records.delta(test, None if base is None else base.test_accuracy),
                note=note,
            )
        )
    return out


def pct(v: float | None) -> str:
    """A fraction as a percentage with two decimals; "" for None."""
    return "" if v is None else f"{100 * v:.2f}%"


def pp(v: float | None) -> str:
    """A fraction's difference in signed percentage points; "" for None."""
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


def _own_cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _cells(table: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The table's header and cells: parameters, val and test accuracy, test loss, Δ in pp."""
    used = [c for c in _PARAM_COLUMNS if any(c[0] in r.params for r in table)]
    if not any(r.params.get("family") == "dropout" for r in table):
        used = [c for c in used if not c[0].startswith("dropout")]
    builtin = {key for key, _, _ in _PARAM_COLUMNS}
    own = dict.fromkeys(k for r in table for k in r.params if k not in builtin)
    used += [(key, key, _own_cell) for key in own]  # a family's own hyperparameters
    header = ["#", *(label for _, label, _ in used)]
    header += ["val acc", "test acc", "test loss", "Δval pp", "Δtest pp", "note"]
    lines = []
    for r in table:
        cells = [f"{r.number}{'*' if r.is_baseline else ''}"]
        cells += [fmt(r.params[key]) if key in r.params else "" for key, _, fmt in used]
        loss = r.record.test_loss if r.test_accuracy is not None else None
        note = "baseline" if r.is_baseline else r.note or ("" if r.state == "COMPLETE" else r.state)
        cells += [
            pct(r.val_accuracy),
            pct(r.test_accuracy),
            "" if loss is None else f"{loss:.3f}",
            pp(r.delta_val),
            pp(r.delta_test),
            note,
        ]
        lines.append(cells)
    return header, lines


cells = _cells  # the header and cells of a table, for a renderer of one's own


def render_html(header: list[str], body: list[list[str]]) -> str:
    """A table as HTML (a notebook's rendering of :class:`sweep.Results`)."""
    import html

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


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
    """The same table in Markdown, as the reports' Table 1."""
    return render_markdown(*_cells(table))


def leaderboard(table: list[Row]) -> list[Row]:
    """Complete trials best first (the baseline among them), then the others by number."""
    done = [r for r in table if r.val_accuracy is not None]
    done.sort(key=lambda r: -(r.val_accuracy or 0.0))
    return done + [r for r in table if r.val_accuracy is None]


def summary(table: list[Row]) -> str:
    """One paragraph: the baseline, the best trial and its lead."""
    base = next((r for r in table if r.is_baseline and r.val_accuracy is not None), None)
    ranked = leaderboard(table)
    best = ranked[0] if ranked and ranked[0].val_accuracy is not None else None
    parts = [f"{len(table)} finished trials."]
    if base is not None:
        parts.append(
            f"Baseline: trial {base.number}, validation {pct(base.val_accuracy)}, "
            f"test {pct(base.test_accuracy)}."
        )
    else:
        parts.append("The baseline has not completed yet.")
    if best is not None and not best.is_baseline:
        lead = "" if best.delta_val is None else f" ({pp(best.delta_val)} pp on validation"
        lead += "" if best.delta_test is None else f", {pp(best.delta_test)} pp on test)"
        parts.append(f"Best: trial {best.number}, validation {pct(best.val_accuracy)}{lead}.")
    elif best is not None:
        parts.append("No trial beats the baseline yet.")
    return " ".join(parts)


def study_note(name: str, description: str, table: list[Row], verification: str) -> str:
    """The study's note in the dashboard: summary, leaderboard and, once run, verification."""
    parts = [
        f"# {name}",
        description,
        summary(table),
        "## Leaderboard",
        "Δ columns are percentage points against the baseline (marked `*`). The study's "
        "figure *history-vs-baseline* draws every trial against the baseline's value.",
        markdown_table(leaderboard(table)),
        verification,
    ]
    return "\n\n".join(p for p in parts if p)
