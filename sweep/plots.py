"""Figures of trials and studies, every one drawn against the baseline.

A trial's learning curves are an SVG drawn by pygal (workers draw one after every trial, and
pygal costs a fraction of Matplotlib). The report's static figures (PNG) are Matplotlib's,
drawn on a bare :class:`~matplotlib.figure.Figure` so no GUI backend or global pyplot state is
involved.
Interactive figures (HTML, and the dashboard's study page) are Plotly's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep.data import CIFAR10_CLASSES

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure
    from plotly.graph_objects import Figure as PlotlyFigure

__all__ = [
    "CIFAR10_CLASSES",
    "grid_heatmap",
    "history_figure",
    "learning_curves",
    "save_png",
]

BASELINE_STYLE: dict[str, Any] = {"color": "0.45", "linestyle": "--", "linewidth": 1.2}


def save_png(figure: Figure, path: Path) -> Path:
    # zlib's fastest level: the files are a few percent larger, and written faster.
    figure.savefig(path, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return path


def learning_curves(
    history: dict[str, list[float]],
    baseline: dict[str, list[float]] | None,
    *,
    title: str,
) -> str:
    """Accuracy and loss per epoch, train and validation, the baseline's validation curves
    dashed beside them: one SVG document, the accuracy chart left of the loss chart.

    Drawn by pygal, not Matplotlib: every completed trial draws one, and measured side by
    side Matplotlib cost a worker about ten times pygal's CPU, to import and per figure (a
    trial's whole cost is what ``python -m benchmarks --only overhead`` prints).
    """
    import pygal
    from pygal.style import Style

    # Matplotlib's blue and orange for train and validation, grey for the baseline.
    style = Style(
        background="white", plot_background="white", font_family="sans-serif",
        colors=("#1f77b4", "#ff7f0e", "#737373"), guide_stroke_color="#e4e4e4",
        major_guide_stroke_color="#e4e4e4", guide_stroke_dasharray="1,0",
        major_guide_stroke_dasharray="1,0",
    )  # fmt: skip
    width, height = 450, 360
    charts = []
    for metric in ("accuracy", "loss"):
        series = [(label, history.get(key, [])) for label, key in (
            ("train", metric), ("validation", f"val_{metric}"))]  # fmt: skip
        base = (baseline or {}).get(f"val_{metric}", [])
        chart = pygal.Line(
            style=style, width=width, height=height, js=[], disable_xml_declaration=True,
            title=f"{title}: {metric}", x_title="epoch", legend_at_bottom=True,
            truncate_legend=-1, dots_size=2.5,
        )  # fmt: skip
        longest = max(len(base), *(len(values) for _, values in series))
        chart.x_labels = [str(epoch) for epoch in range(1, longest + 1)]
        for label, values in series:
            chart.add(label, values)
        if base:
            dashed = {"dasharray": "6, 4"}
            chart.add("baseline validation", base, stroke_style=dashed, show_dots=False)
        charts.append(chart.render(is_unicode=True))
    # Two charts side by side: each pygal document nested in an outer one at its own x.
    inner = "".join(
        f'<svg x="{i * width}" y="0" width="{width}" height="{height}"' + svg.removeprefix("<svg")
        for i, svg in enumerate(charts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" '
        f'viewBox="0 0 {2 * width} {height}">{inner}</svg>'
    )


def history_figure(study: optuna.Study, baseline_value: float | None) -> PlotlyFigure:
    """The optimization history (each completed trial's value, and the best so far), with the
    baseline's value drawn as a line.

    Drawn with ``plotly.graph_objects`` alone: ``optuna.visualization`` would do it too, but
    importing it costs a worker a noticeable share of a short trial's CPU (``python -m
    benchmarks --only overhead`` prints a trial's cost beyond training).
    """
    import itertools

    import plotly.graph_objects as go
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    points = [(t.number, float(t.value)) for t in done if t.value is not None]
    numbers, values = [n for n, _ in points], [v for _, v in points]
    figure = go.Figure(
        [
            go.Scatter(x=numbers, y=values, mode="markers", name="val accuracy"),
            go.Scatter(x=numbers, y=list(itertools.accumulate(values, max)), name="best so far"),
        ]
    )
    if baseline_value is not None:
        # A shape and an annotation, not add_hline, which is far slower in Plotly.
        figure.add_shape(
            type="line", xref="paper", x0=0, x1=1, y0=baseline_value, y1=baseline_value,
            line={"dash": "dash", "color": "gray"},
        )  # fmt: skip
        figure.add_annotation(
            xref="paper", x=1, y=baseline_value, xanchor="right", yanchor="top",
            text=f"baseline {100 * baseline_value:.2f}%", showarrow=False,
        )  # fmt: skip
    figure.update_layout(
        title="Validation accuracy of every trial against the baseline",
        xaxis_title="trial",
        yaxis_title="val accuracy",
    )
    return figure


def grid_heatmap(
    points: list[tuple[dict[str, Any], float]], dims: tuple[str, str]
) -> tuple[Figure, PlotlyFigure]:
    """A grid study as a heatmap over ``dims``: each cell the best value over the other
    dimensions. Returns the Matplotlib and the Plotly figure."""
    import numpy as np
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

    def label(v: Any) -> str:
        return f"{v:g}" if isinstance(v, int | float) else str(v)

    rows_dim, cols_dim = dims
    row_keys = sorted({p[rows_dim] for p, _ in points})
    col_keys = sorted({p[cols_dim] for p, _ in points})
    cells = np.full((len(row_keys), len(col_keys)), np.nan)
    for params, value in points:
        i, j = row_keys.index(params[rows_dim]), col_keys.index(params[cols_dim])
        cells[i, j] = value if np.isnan(cells[i, j]) else max(cells[i, j], value)
    title = f"best validation accuracy per {rows_dim} x {cols_dim}"

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    image = ax.imshow(cells, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(col_keys)), [label(v) for v in col_keys])
    ax.set_yticks(range(len(row_keys)), [label(v) for v in row_keys])
    ax.set_xlabel(cols_dim)
    ax.set_ylabel(rows_dim)
    for i in range(len(row_keys)):
        for j in range(len(col_keys)):
            if not np.isnan(cells[i, j]):
                ax.text(j, i, f"{100 * cells[i, j]:.1f}", ha="center", va="center", color="w")
    ax.set_title(title)

    interactive = go.Figure(
        go.Heatmap(
            z=cells,
            x=[label(v) for v in col_keys],
            y=[label(v) for v in row_keys],
            colorscale="Viridis",
            texttemplate="%{z:.3f}",
        )
    )
    interactive.update_layout(title=title, xaxis_title=cols_dim, yaxis_title=rows_dim)
    return fig, interactive
