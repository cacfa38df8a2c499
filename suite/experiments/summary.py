"""`summary`: the methods of GRID_METHODS × every model × every dataset of the profile, with BP as
reference. The methods are named here, not taken from the registry: registering a method does not
change the committed grid (add it to GRID_METHODS, and run its cells, to put it in)."""

from __future__ import annotations

import math

import pandas as pd

from suite.experiments.base import Experiment, cross
from suite.report.compare import (
    TARGET_NOTE,
    accuracy_by_seed,
    accuracy_text,
    at_chance_causes,
    compare_to_bp,
)
from suite.report.figures import (
    ACC_LABEL,
    epoch_axis,
    lines_with_seeds,
    one_legend,
    panels,
    percent,
)
from suite.report.palette import colors
from suite.report.stats import fmt_diff, paired_diff_ci
from suite.tuning.settings import apply_tuned, current_mode, selected, tuning_note

GRID_METHODS = ("bp", "fa", "dfa", "bdfa", "hybrid-dfa", "usf", "brsf", "frsf", "local", "bp-sparsity", "penalty",
                "augmented-lagrangian", "mgrit")
GRIDS = {
    "smoke": (["mlp", "cnn", "resnet20", "odenet:8-4-fc"], ["mnist"]),
    "quick": (["mlp", "cnn", "resnet20", "odenet:8-8-fc"], ["mnist"]),
    "paper": (["resnet20", "resnet56", "resnet18", "wrn16-4", "odenet:64-16-fc"], ["cifar10", "cifar100"]),
}


# The plain `cnn` (no BatchNorm) does not train with the ResNet recipe's lr 0.1 (BP stays at chance
# on MNIST; lr 0.02 reaches 97% in 3 epochs), so every method with an `lr` runs it at 0.02 here.
MODEL_OVERRIDES = {"cnn": {"lr": "0.02"}}

# Run settings per model that keep the whole `quick` reproduction within its 20-minute budget on 2
# CPU cores: ResNet-20 costs ~24 GFLOP per step, so it trains on fewer samples.
RUN_OVERRIDES = {"quick": {"resnet20": {"train_subset": "4000", "test_subset": "1000"}}}


def grid(profile: str, seeds: int):
    from suite.methods import METHODS
    from suite.params import keys_of

    models, datasets = GRIDS[profile]
    cells = []
    for cell in cross(list(GRID_METHODS), models, datasets, profile, seeds):
        keys = set(keys_of(METHODS[cell.method].HParams))
        extra = {k: v for k, v in MODEL_OVERRIDES.get(cell.model, {}).items() if k in keys}
        extra |= RUN_OVERRIDES.get(profile, {}).get(cell.model, {})
        cells.append(cell.with_overrides(**extra) if extra else cell)
    return apply_tuned("summary", cells)  # the settings `bpsuite tune` chose, where it has an entry


def declare_settings(ctx) -> None:
    """The summary reproduces no paper, so 'published' is '–' throughout; the rows say what every
    cell shares and where each value comes from."""
    from suite.config import resolve
    models, datasets = GRIDS[ctx.profile]
    with selected("defaults"):
        bp = resolve(next(c for c in grid(ctx.profile, 1) if c.method == "bp")).hparams
        run = resolve(grid(ctx.profile, 1)[0]).train
    subsets = "; ".join(f"{m}: {o['train_subset']}" for m, o in RUN_OVERRIDES.get(ctx.profile, {}).items())
    model_lrs = ", ".join(f"{m}: {o['lr']}" for m, o in MODEL_OVERRIDES.items())
    ctx.declare_settings([
        ("models, datasets", "–", f"{', '.join(models)}; {', '.join(datasets)}", "suite choice (GRIDS)"),
        ("training images", "–", f"{run.train_subset or 'all'}" + (f" ({subsets})" if subsets else ""),
         f"profile `{ctx.profile}`; RUN_OVERRIDES keep the grid within its time budget"),
        ("epochs, batch", "–", f"{run.epochs}, {run.batch_size}", f"profile `{ctx.profile}`"),
        ("optimiser", "–", f"{bp.optimizer}, momentum {bp.momentum}, weight decay {bp.weight_decay}, "
         f"lr ×{bp.gamma} at {', '.join(f'{m:.0%}' for m in bp.milestones)} of training",
         "each method's defaults (He et al. 2016's CIFAR recipe for bp)"),
        ("learning rate", "–", "tuned per method and cell where baselines/tuned-settings.json has an entry; "
         f"else {bp.lr:g} ({model_lrs})",
         "`bpsuite tune` (docs/tuning.md): 8-point log grid, validation split, seed 0; only the learning "
         "rate was tuned, every other setting of each method is at its default"),
        ("threads per run, divergence bound", "–", f"{run.threads}; loss > {run.diverge_factor:g}× its first window",
         "run settings (docs/design.md)"),
    ])


def report(ctx) -> None:
    declare_settings(ctx)
    runs = ctx.runs
    history = ctx.history(["test_acc", "train_time", "train_loss"])
    table = compare_to_bp(runs, history, ["dataset", "model"])
    not_finished = runs[runs.status != "finished"] if len(runs) else runs
    settings = {m: o | RUN_OVERRIDES.get(ctx.profile, {}).get(m, {}) for m, o in MODEL_OVERRIDES.items()}
    settings |= {m: o for m, o in RUN_OVERRIDES.get(ctx.profile, {}).items() if m not in settings}
    notes = TARGET_NOTE + " Every method runs at its own defaults and the profile's settings, except: " + "; ".join(
        f"on {m}, {', '.join(f'{k}={v}' for k, v in o.items())}" for m, o in settings.items()) + "."
    notes += ("\n\nmgrit on the summary's odenet (8 steps, coarsening factor 4) has only 2 levels, where its 2 "
              "forward iterations are already exact: that row is BP-equivalent by construction, not a test of "
              "one-shot MGRIT (results/mgrit.md tests that at depth ≥ 16 with ≥ 3 levels). A 'diverged' entry is "
              "a run whose training loss blew up (non-finite or past 10× its first window) at the cell's learning "
              "rate: the method needs a smaller one there, which the tuned settings (where present) provide.")
    tuned = tuning_note("summary", ctx.profile)
    notes += f"\n\n{tuned}" if tuned else ""
    causes = at_chance_causes(runs, history) if len(runs) else []
    if causes:
        notes += "\n\nSeeds at chance, and what their loss did:\n\n" + "\n".join(f"* {c}" for c in causes)
    if len(not_finished):
        notes += "\n\nNot finished (skipped cells say why):\n\n" + not_finished[
            ["dataset", "model", "method", "status", "status_reason"]].drop_duplicates().to_markdown(index=False)
    ctx.write_table(table, notes=notes)
    effect = tuning_effect(ctx)
    if len(effect):
        ctx.write_table(effect, suffix="tuning-effect", title="What tuning changed: the summary at the experiment's "
                        "settings and at the tuned ones", notes=TUNING_EFFECT_NOTE)

    hist = history[history.key == "test_acc"]
    if hist.empty:
        return
    hist = hist.assign(value=percent(hist["value"]))
    models = sorted(hist.model.unique())
    methods = [m for m in _method_order() if m in set(hist.method)] + sorted(set(hist.method) - set(_method_order()))
    palette = colors(methods)
    fig, axes = panels(len(models), panel=(4.2, 3.0), legend_width=1.9)
    for ax, model in zip(axes, models):
        lines_with_seeds(ax, hist[hist.model == model], "step", "value", "method", palette, methods)
        ax.set(title=model, ylabel=ACC_LABEL)
        epoch_axis(ax)
    one_legend(fig, title="method", order=methods)
    seeds = int(ctx.runs.seed.nunique()) if len(ctx.runs) else 0
    ctx.save_figure(fig, "test-acc", "measured",
                    f"Test accuracy vs epoch, every method, {', '.join(sorted(hist.dataset.unique()))}, profile "
                    f"{ctx.profile} (mean and 95% bootstrap CI over {seeds} seeds; dots: seeds)",
                    reproduces="suite summary (no paper figure)")


def _method_order() -> list[str]:
    """The grid's order of methods (BP first)."""
    return list(GRID_METHODS)


TUNING_EFFECT_NOTE = (
    "Each row is a summary cell whose learning rate `bpsuite tune` changed: test accuracy (mean ± 95% CI over "
    "seeds) at the experiment's own setting and at the tuned one, from the committed runs of both grids (`bpsuite "
    "reproduce summary --settings defaults` ran the first). Δ: tuned − default, paired by seed (both runs of a "
    "seed start from the same weights and see the same batches); '–' where the default diverged or the seeds "
    "differ. Tuning chose by validation accuracy on seed 0 (10% held out); a tuned rate that tests worse here "
    "shows how much one seed's choice moves.")


def tuning_effect(ctx) -> pd.DataFrame:
    """Default vs tuned accuracy per cell with a tuned learning rate, where the store holds the
    runs of both grids; empty when the report itself is at the default settings."""
    from suite.report.runs import experiment_runs
    tuned = ctx.runs
    if current_mode() != "tuned" or tuned.empty:
        return pd.DataFrame()
    with selected("defaults"):
        default = experiment_runs(ctx.tracker, ctx.experiment, ctx.profile, int(tuned.seed.max()) + 1)
    if default.empty:
        return pd.DataFrame()
    rows = []
    for (model, method), after in tuned.groupby(["model", "method"], sort=False):
        before = default[(default.model == model) & (default.method == method)]
        lr_after, lr_before = _lr(after), _lr(before)
        if before.empty or lr_after == lr_before or math.isnan(lr_after):
            continue
        acc_before, acc_after = accuracy_by_seed(before), accuracy_by_seed(after)
        diff, half, kind = (paired_diff_ci(acc_after, acc_before) if len(acc_before) and len(acc_after)
                            else (math.nan, math.nan, ""))
        rows.append({"model": model, "method": method, "lr (default → tuned)": f"{lr_before:.3g} → {lr_after:.3g}",
                     "test acc % at default": accuracy_text(before), "test acc % tuned": accuracy_text(after),
                     "Δ (pts)": "–" if math.isnan(diff) or kind != "paired"
                     else fmt_diff(diff, half, per_seed=list((acc_after - acc_before.reindex(acc_after.index)).dropna()))})
    return pd.DataFrame(rows).sort_values(["model", "method"], kind="stable") if rows else pd.DataFrame()


def _lr(runs: pd.DataFrame) -> float:
    if "p.hp.lr" not in runs:
        return math.nan
    values = pd.to_numeric(runs["p.hp.lr"], errors="coerce").dropna().unique()
    return float(values[0]) if len(values) == 1 else math.nan


EXPERIMENT = Experiment(
    name="summary", title="Every method on every model and dataset of the profile",
    source="suite summary (no single paper table)", grid=grid, report=report)
