"""Shared pieces of the feedback-alignment experiments (dfa-cnn, biotorch-resnet,
launay-bottleneck): run labels and the two per-epoch figures."""

from __future__ import annotations

import pandas as pd
import seaborn as sns

from suite.methods.feedback.alignment import ALIGN_UNIT
from suite.metrics import TEST_ACC
from suite.report.figures import (
    ACC_LABEL,
    epoch_axis,
    lines_with_seeds,
    one_legend,
    panels,
    percent,
)
from suite.report.palette import colors, method_of


def variant(frame: pd.DataFrame) -> pd.Series:
    """A readable method label: hybrid-dfa's preset, dfa's granularity and the optimiser when set."""
    def label(row):
        name = row["method"]
        preset = row.get("o.preset")
        if isinstance(preset, str):
            name += f" ({preset}" + (f", {row['o.modules']} modules" if preset == "modulewise" and
                                      isinstance(row.get("o.modules"), str) else "") + ")"
        if isinstance(row.get("o.granularity"), str):
            name += f" [{row['o.granularity']}]"
        return name
    return frame.apply(label, axis=1) if len(frame) else pd.Series(dtype=str)


def align_keys(runs: pd.DataFrame) -> list[str]:
    """The per-unit gradient-alignment keys the runs logged, unit 0 first."""
    return [c[2:] for c in ALIGN_UNIT.columns(runs.columns)]


def accuracy_figure(ctx, hist: pd.DataFrame, facet: str, suffix: str, title: str, reproduces: str) -> None:
    acc = hist[hist.key == TEST_ACC.key]
    if acc.empty:
        return
    acc = acc.assign(value=percent(acc["value"]))
    panel_names = sorted(acc[facet].unique(), key=str)
    order = sorted(acc["variant"].unique(), key=lambda v: (method_rank(v), v))
    palette = colors(order)
    fig, axes = panels(len(panel_names), panel=(4.0, 3.0), legend_width=2.4)
    for ax, panel in zip(axes, panel_names):
        lines_with_seeds(ax, acc[acc[facet] == panel], "step", "value", "variant", palette, order)
        ax.set(title=str(panel), ylabel=ACC_LABEL)
        epoch_axis(ax)
    one_legend(fig, title="method", order=order)
    ctx.save_figure(fig, suffix, "measured", title, reproduces=reproduces)


def method_rank(label: str) -> int:
    """A label's method's place in the registry (BP first); unknown methods last."""
    from suite.methods import METHODS
    names = list(METHODS)
    method = method_of(label)
    return names.index(method) if method in names else len(names)


def alignment_figure(ctx, hist: pd.DataFrame, suffix: str, title: str, reproduces: str) -> None:
    """Gradient alignment (cosine with BP) vs epoch, one line per unit, one panel per variant."""
    al = hist[hist.key.map(ALIGN_UNIT.matches)].copy()
    if al.empty:
        return
    al["unit"] = al.key.map(lambda k: ALIGN_UNIT.index(k, "unit"))
    panel_names = sorted(al["panel"].unique(), key=str)
    units = sorted(al.unit.unique())
    unit_palette = dict(zip(units, sns.color_palette("viridis", len(units))))
    fig, axes = panels(len(panel_names), panel=(3.6, 2.8), legend_width=1.2, sharey=True)
    for ax, panel in zip(axes, panel_names):
        sub = al[al["panel"] == panel]
        sns.lineplot(sub, x="step", y="value", hue="unit", palette=unit_palette, marker="o", ax=ax,
                     errorbar=None, legend=len(units) <= 12)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=str(panel), ylabel="alignment (cos with BP)", ylim=(-0.25, 1.02))
        epoch_axis(ax)
    one_legend(fig, title="unit", order=[str(u) for u in units])
    ctx.save_figure(fig, suffix, "measured", title, reproduces=reproduces)


def with_labels(hist: pd.DataFrame, runs: pd.DataFrame, panel_cols: list[str]) -> pd.DataFrame:
    """Attach `variant` and a `panel` string (variant + the given cell columns) to a history frame."""
    labels = runs[["run_id"]].assign(variant=variant(runs).values)
    hist = hist.merge(labels, on="run_id", how="left")
    hist["panel"] = hist["variant"]
    for col in panel_cols:
        hist["panel"] = hist["panel"] + " · " + hist[col].astype(str)
    return hist
