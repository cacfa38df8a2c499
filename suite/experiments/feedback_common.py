"""Shared pieces of the feedback-alignment experiments (dfa-cnn, biotorch-resnet,
launay-bottleneck): run labels and the two per-epoch figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from suite.methods.feedback.alignment import ALIGN_UNIT
from suite.metrics import TEST_ACC


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
    panels = sorted(acc[facet].unique(), key=str)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        sns.lineplot(acc[acc[facet] == panel], x="step", y="value", hue="variant", marker="o", ax=ax,
                     errorbar=("ci", 95), seed=0)
        ax.set(title=str(panel), xlabel="epoch", ylabel="test accuracy")
        ax.legend(fontsize=7)
    ctx.save_figure(fig, suffix, "measured", title, reproduces=reproduces)


def alignment_figure(ctx, hist: pd.DataFrame, suffix: str, title: str, reproduces: str) -> None:
    """Gradient alignment (cosine with BP) vs epoch, one line per unit, one panel per variant."""
    al = hist[hist.key.map(ALIGN_UNIT.matches)].copy()
    if al.empty:
        return
    al["unit"] = al.key.map(lambda k: ALIGN_UNIT.index(k, "unit"))
    panels = sorted(al["panel"].unique(), key=str)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        sub = al[al["panel"] == panel]
        sns.lineplot(sub, x="step", y="value", hue="unit", palette="viridis", marker="o", ax=ax,
                     errorbar=None, legend=len(sub.unit.unique()) <= 12)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(title=str(panel), xlabel="epoch", ylabel="alignment (cos with BP)", ylim=(-0.25, 1.02))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    ctx.save_figure(fig, suffix, "measured", title, reproduces=reproduces)


def with_labels(hist: pd.DataFrame, runs: pd.DataFrame, panel_cols: list[str]) -> pd.DataFrame:
    """Attach `variant` and a `panel` string (variant + the given cell columns) to a history frame."""
    labels = runs[["run_id"]].assign(variant=variant(runs).values)
    hist = hist.merge(labels, on="run_id", how="left")
    hist["panel"] = hist["variant"]
    for col in panel_cols:
        hist["panel"] = hist["panel"] + " · " + hist[col].astype(str)
    return hist
