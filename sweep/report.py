"""Comparisons against the baseline, read from the storage: the seeds' Table 1 layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["Row", "format_table", "rows"]


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


def format_table(table: list[Row]) -> str:
    """A plain-text table: parameters, validation and test accuracy, test loss, Δ in pp."""
    used = [c for c in _PARAM_COLUMNS if any(c[0] in r.params for r in table)]
    if not any(r.params.get("family") == "dropout" for r in table):
        used = [c for c in used if not c[0].startswith("dropout")]
    header = ["#", *(label for _, label, _ in used)]
    header += ["val acc", "test acc", "test loss", "Δval pp", "Δtest pp", "note"]
    lines = [header]
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
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    rendered = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    ]
    rendered.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(rendered)
