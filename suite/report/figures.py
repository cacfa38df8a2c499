"""What every figure shares: panels laid out to fit GitHub's page width, one legend per figure
outside the data, accuracy in %, integer epoch ticks, and per-seed points beside a band.

Figures are made with `panels(...)` (constrained layout, so titles, labels and the legend stay
on the canvas), coloured with `suite.report.palette`, and finished with `one_legend(fig)` before
`ctx.save_figure`, which adds the title and saves at 120 dpi, at most MAX_WIDTH_IN wide.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

MAX_WIDTH_IN = 12.0  # 1440 px at the saved 120 dpi
ACC_LABEL = "test accuracy (%)"


def panels(n: int, cols: int | None = None, panel: tuple[float, float] = (3.6, 2.9), legend_width: float = 1.8,
           sharey: bool = False, **kwargs):
    """A figure of n panels (at most 3 a row unless `cols` says), constrained layout, with room
    for a legend at the right; returns (fig, [axes...]) with the spare axes hidden."""
    cols = max(1, min(n, cols or (2 if n == 4 else 3)))
    rows = math.ceil(n / cols)
    width = min(MAX_WIDTH_IN, panel[0] * cols + legend_width)
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel[1] * rows + 0.6), squeeze=False, sharey=sharey,
                             layout="constrained", **kwargs)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def one_legend(fig, title: str | None = None, where: str = "right", fontsize: float = 8, order=None):
    """Gather the legend entries of every axes into one figure legend outside the data (right of
    the panels, or below with `where="below"`); the axes' own legends are removed. Entries with
    the same label are drawn once; `order` (labels) sorts them. Returns the legend or None."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not handles:
        return None
    labels = list(handles)
    if order is not None:
        rank = {label: i for i, label in enumerate(order)}
        labels.sort(key=lambda lab: rank.get(lab, len(rank)))
    if where == "below":
        ncol = min(len(labels), 4)
        return fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=ncol,
                          title=title, fontsize=fontsize, title_fontsize=fontsize, frameon=False)
    return fig.legend([handles[lab] for lab in labels], labels, loc="outside right center", title=title,
                      fontsize=fontsize, title_fontsize=fontsize, frameon=False)


def epoch_axis(ax, label: str = "epoch") -> None:
    """Integer ticks on the x axis (epochs, iterations, workers)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if label:
        ax.set_xlabel(label)


def percent(values) -> pd.Series | np.ndarray | float:
    """An accuracy logged as a fraction, in %."""
    return values * 100


def lines_with_seeds(ax, data: pd.DataFrame, x: str, y: str, hue: str, palette: dict[str, str],
                     order: list[str] | None = None, seeds: bool = True, **kwargs) -> None:
    """Mean line per `hue` with its 95% bootstrap band over seeds (it stays within the seeds'
    range, so within [0, 100] for accuracy), and each seed's value as a small point beside it
    where there are few seeds (≤ 5 per point)."""
    order = order or [h for h in palette if h in set(data[hue])]
    sns.lineplot(data, x=x, y=y, hue=hue, hue_order=order, palette=palette, errorbar=("ci", 95), seed=0,
                 marker="o", markersize=4, ax=ax, **kwargs)
    if not seeds or data.empty:
        return
    per_point = data.groupby([hue, x]).size()
    if len(per_point) and per_point.max() <= 5 and per_point.max() > 1:
        ax.scatter(data[x], data[y], s=7, c=[palette[h] for h in data[hue]], alpha=0.45, linewidths=0,
                   zorder=3, label="_seeds")


def _colour_of(handle) -> str | None:
    from matplotlib.colors import to_hex, to_rgba_array
    for getter in ("get_color", "get_facecolor", "get_edgecolor"):
        if hasattr(handle, getter):
            rgba = to_rgba_array(getattr(handle, getter)())
            if len(rgba):
                return to_hex(rgba[0][:3])
    return None


def legend_colours(fig) -> dict[str, str]:
    """{label: colour} of the entries of the figure's legends."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out = {}
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            colour = _colour_of(handle)
            if colour is not None:
                out[text.get_text()] = colour
    return out


def figure_problems(fig, dpi: float = 120) -> list[str]:
    """What breaks this module's rules in a finished figure (after `ctx.save_figure`): more than
    one legend, a text (title, label, tick label, legend) outside the canvas, a width past
    MAX_WIDTH_IN, a method's legend colour other than its palette colour, two methods alike."""
    from suite.report import palette
    problems = []
    legends = len(fig.legends) + sum(ax.get_legend() is not None for ax in fig.axes)
    if legends > 1:
        problems.append(f"{legends} legends (at most one per figure)")
    if fig.get_size_inches()[0] > MAX_WIDTH_IN + 1e-6:
        problems.append(f"{fig.get_size_inches()[0]:.1f} in wide (at most {MAX_WIDTH_IN})")
    fig.set_dpi(dpi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    def outside(box) -> bool:
        return box.x0 < canvas.x0 - 1 or box.y0 < canvas.y0 - 1 or box.x1 > canvas.x1 + 1 or box.y1 > canvas.y1 + 1

    texts = list(fig.texts) + ([fig._suptitle] if fig._suptitle is not None else [])
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        box = ax.get_tightbbox(renderer)  # the panel with its drawn tick labels
        if box is not None and outside(box):
            problems.append(f"panel {ax.get_title()[:40]!r} (with its tick labels) leaves the canvas")
    for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]:
        texts += list(legend.get_texts()) + [legend.get_title()]
        if outside(legend.get_window_extent(renderer)):
            problems.append("a legend leaves the canvas")
    for text in texts:
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if outside(box):
            problems.append(f"text {text.get_text()[:40]!r} outside the canvas ({box.bounds} vs {canvas.bounds})")
    colours = legend_colours(fig)
    methods = {label: c for label, c in colours.items() if palette.method_of(label) is not None}
    for label, colour in methods.items():
        if label in palette.METHOD_COLORS and colour != palette.color(label):
            problems.append(f"{label} drawn in {colour}, its palette colour is {palette.color(label)}")
    seen: dict[str, str] = {}
    for label, colour in methods.items():
        if colour in seen:
            problems.append(f"{label} and {seen[colour]} share the colour {colour}")
        seen.setdefault(colour, label)
    return problems
