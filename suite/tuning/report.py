"""What a `bpsuite tune` call writes: the chosen settings per cell and method
(`results/tuning-<experiment>.md/.csv`) and, for every cell, the sensitivity curves: validation
accuracy of every trial against each tuned parameter, one line per method
(`paper_figures/tuning-<experiment>.png`). Written from the studies themselves, so rerunning
`bpsuite tune` (which runs no trial twice) rewrites them.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from suite.config import resolve
from suite.params import Categorical, LogUniform
from suite.report.context import ReportContext, set_style
from suite.report.figures import one_legend, panels
from suite.report.palette import colors


def trials_frame(results) -> pd.DataFrame:
    rows = []
    for r in results:
        best = r.best
        for t in r.trials:
            for key, value in t.settings.items():
                rows.append({"dataset": r.spec.cell.dataset, "model": r.spec.cell.model, "method": r.spec.cell.method,
                             "trial": t.number, "param": key, "value": value, "val_acc": 100 * t.value,
                             "status": t.status, "chosen": best is not None and t.number == best.number})
    return pd.DataFrame(rows, columns=["dataset", "model", "method", "trial", "param", "value", "val_acc",
                                       "status", "chosen"])


def settings_table(results) -> pd.DataFrame:
    rows = []
    for r in results:
        spec, best = r.spec, r.best
        before = dataclasses.asdict(resolve(spec.cell).hparams)
        diverged = sum(t.status == "diverged" for t in r.trials)
        if r.status == "complete" and best is None:
            note = "every trial diverged: the experiment's settings stay"
        else:
            note = r.reason or ("" if r.status == "complete" else r.status)
        rows.append({
            "dataset": spec.cell.dataset, "model": spec.cell.model, "method": spec.cell.method,
            "status": r.status, "trials": len(r.trials), "diverged": diverged,
            "best val acc %": f"{100 * best.value:.2f}" if best else "–",
            "chosen": ", ".join(f"{k}={float(v):.3g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in best.settings.items()) if best else "–",
            "experiment's setting": ", ".join(f"{k}={before[k]}" for k in spec.space) or "–",
            "space": "; ".join(f"{k}: {s}" for k, s in spec.space.items()) or "–",
            "note": note})
    table = pd.DataFrame(rows)
    return table.sort_values(["dataset", "model", "method"], kind="stable") if len(table) else table


def _plot_cells(ctx: ReportContext, results, frame: pd.DataFrame) -> None:
    specs = {(r.spec.cell.model, r.spec.cell.dataset): r.spec for r in results if r.trials}
    cells = [(model, dataset, key) for (model, dataset), spec in sorted(specs.items()) for key in spec.space]
    if not cells:
        return
    methods = sorted(frame.method.unique(), key=lambda m: (method_rank(m), m))
    palette = colors(methods)
    fig, axes = panels(len(cells), panel=(3.4, 2.9), legend_width=1.9, sharey=True)
    for ax, (model, dataset, key) in zip(axes, cells):
        sub = frame[(frame.model == model) & (frame.dataset == dataset) & (frame.param == key)]
        sub = sub.sort_values("value", kind="stable")
        space = specs[(model, dataset)].space[key]
        trained, diverged = sub[sub.status != "diverged"], sub[sub.status == "diverged"]
        if isinstance(space, Categorical):
            sns.stripplot(trained, x="value", y="val_acc", hue="method", palette=palette, hue_order=methods, ax=ax,
                          dodge=True, size=4)
        else:
            # a line joins only the trials that trained; a diverged trial is its own mark at 0
            sns.lineplot(trained, x="value", y="val_acc", hue="method", palette=palette, hue_order=methods,
                         estimator=None, marker="o", markersize=4, lw=1, ax=ax)
            chosen = sub[sub.chosen]
            ax.scatter(chosen.value, chosen.val_acc, marker="*", s=110, c=[palette[m] for m in chosen.method],
                       edgecolors="black", linewidths=0.6, zorder=5, label="_chosen")
            # the whole search range, the same for every method, with a margin for the end points
            if isinstance(space, LogUniform):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlim(space.low / 1.5, space.high * 1.5)
            else:
                pad = 0.05 * (space.high - space.low)
                ax.set_xlim(space.low - pad, space.high + pad)
        if len(diverged) and not isinstance(space, Categorical):
            ax.scatter(diverged.value, [0.0] * len(diverged), marker="x", s=28, linewidths=1.2,
                       c=[palette[m] for m in diverged.method], zorder=5, label="_diverged")
        ax.set(title=f"{model} / {dataset}", xlabel=key, ylabel="validation accuracy (%)", ylim=(-4, 103))
    one_legend(fig, title="method", order=methods)
    ctx.save_figure(fig, "sensitivity", "measured",
                    f"Validation accuracy per trial vs the tuned parameter (★ chosen; × diverged, drawn at 0 and "
                    f"not joined; {ctx.profile} profile)", reproduces="suite tuning protocol (no paper figure)")


def method_rank(method: str) -> int:
    from suite.methods import METHODS
    return list(METHODS).index(method) if method in METHODS else len(METHODS)


def write_report(experiment: str, profile: str, results, results_dir, figures_dir) -> ReportContext:
    from suite.experiments.base import Experiment

    set_style()
    about = Experiment(name=f"tuning-{experiment}", title=f"Tuned settings of `{experiment}`",
                       source=f"`bpsuite tune {experiment}` (suite tuning protocol, docs/tuning.md)",
                       grid=lambda profile, seeds: [])
    frame = trials_frame(results)
    ctx = ReportContext(about, profile, None, frame, results_dir, figures_dir)
    complete = [r for r in results if r.status != "skipped"]
    budgets = sorted({(r.spec.trials, r.spec.sampler, r.spec.seed, r.spec.val_fraction) for r in complete})
    notes = ("Budget: " + "; ".join(f"{t} trials per method and cell, {s} sampler (seed {seed}), "
                                    f"{v:.0%} of the training set held out as validation" for t, s, seed, v in budgets)
             + f". Objective: {results[0].objective if results else ''}; a diverged trial scores 0; the test "
             "split is never evaluated during a study. `experiment's setting` is what the experiment runs "
             "without tuning. Per-trial values: `paper_figures/tuning-" + experiment + "-sensitivity.png` and "
             "the MLflow experiment `bpsuite-tuning` (one parent run per study, its trials nested).")
    ctx.write_table(settings_table(results), notes=notes)
    if len(frame):
        _plot_cells(ctx, results, frame)
    return ctx
