"""`layer-parallel`: serial BP vs the penalty and augmented-Lagrangian layer-parallel methods, with
and without the serial-parallel hybrid (SPH) and the downsampling (DS) filters, with K = 2 and 4
stages (Sun et al., arXiv 2009.01462 v2/v3).

Only the paper's abstract was available: it claims accuracy "comparable" to serial BP on ResNets
and WideResNets (MNIST, CIFAR-10/100) with a "significant speedup"; its tables are not available
[NF]. The outputs are the main table's shape (accuracy, speedup, communication per variant), the
SPH ablation (accuracy vs serial share), the communication with and without DS, and a verdict on
the accuracy claim under a stated rule: "comparable" = test accuracy at most 1 point below serial
BP's in the same cell, decided on the 95% CI of the per-seed difference (undecided when the CI
straddles −1 pt), for each method with SPH at K = 2 and K = 4.

Grids. `quick`: ResNet-20 on MNIST (1000 training samples, 4 epochs): bp; penalty at K = 2 with
serial share 0 / 25% / 50%; penalty and AL with SPH at K = 2 and 4; the pure parallel phase of
the penalty method (K = 2) in 2 worker processes for the measured speedup (DS: smoke and paper). `verify`:
ResNet-20 on 10000 MNIST samples, 8 epochs, ≥ 3 seeds: bp, penalty and AL with SPH at K = 2
and 4, penalty without SPH at K = 2 and 4. `paper`: ResNet-56 and WRN-16-4 on CIFAR-10/100. `smoke`: odenet:4-4.

Speedups, each labelled: *measured* — this machine's seconds per epoch of the parallel phase, 2
worker processes vs the same mathematics in 1 process (and end to end vs BP); *modelled* — the
method's own K-device model, Σ_steps max_k(stage compute) + communication at `link_gb_per_s`,
against the sum of the stages' compute.
"""

from __future__ import annotations

import math

import pandas as pd

from suite.atomic import write_text
from suite.config import PROFILES, Cell
from suite.experiments.base import Experiment
from suite.methods.layer_parallel.penalty import (
    AUX_MB,
    BETA_SUM,
    COMM_MB,
    COMM_MB_FULL,
    SERIAL_PHASE,
    SPEEDUP,
    VIOLATION,
)
from suite.metrics import EPOCH_TIME, TEST_ACC, TRAIN_TIME
from suite.report.compare import TARGET_NOTE, compare_to_bp
from suite.report.context import hparam
from suite.report.fairness import Evidence, Setting
from suite.report.figures import ACC_LABEL, lines_with_seeds, one_legend, panels, percent
from suite.report.palette import color

SOURCE = ("Sun et al. 2020/2021, arXiv 2009.01462 v2/v3 (abstract: accuracy 'comparable' to serial BP, "
          "SPH and DS); tables not available, shapes regenerated [NF]")
METHODS = ("penalty", "augmented-lagrangian")
SHORT = {"penalty": "penalty", "augmented-lagrangian": "AL"}
COMPARABLE_POINTS = 1.0  # "comparable": at most this many points below BP's accuracy
VERDICT_COL = f"verdict (comparable: paired 95% CI of Δ above −{COMPARABLE_POINTS:g} pt)"
DEFAULT_SHARE = 0.25

# (model, dataset, settings shared by every cell)
SETTINGS = {
    "paper": [(m, d, {}) for m in ("resnet56", "wrn16-4") for d in ("cifar10", "cifar100")],
    "verify": [("resnet20", "mnist", {"epochs": 8, "train_subset": 10000, "test_subset": 2000})],
    "quick": [("resnet20", "mnist", {"epochs": 4, "train_subset": 1000, "test_subset": 500})],
    "smoke": [("odenet:4-4", "mnist", {"epochs": 2})],
}


def variants(profile: str) -> list[tuple[str, dict]]:
    """(method, overrides) of every layer-parallel cell of a profile."""
    sph = {"serial_share": DEFAULT_SHARE, "ds_stride": 1}
    pure = {"serial_share": 0.0, "ds_stride": 1}
    accuracy = [(m, {"stages": k, **sph}) for m in METHODS for k in (2, 4)]  # the claim's verdict
    accuracy += [("penalty", {"stages": k, **pure}) for k in ((2, 4) if profile in ("verify", "paper") else (2,))]
    if profile == "verify":
        return accuracy
    extra = [("penalty", {"stages": 2, "serial_share": 0.5, "ds_stride": 1})]  # the SPH ablation
    if profile != "quick":  # DS (its communication cut is deterministic: smoke shows it)
        extra.append(("penalty", {"stages": 2, "serial_share": DEFAULT_SHARE, "ds_stride": 2}))
    extra.append(("penalty", {"stages": 2, **pure, "distributed": "true"}))  # measured 2-process speedup
    return accuracy + extra


def grid(profile: str, seeds: int) -> list[Cell]:
    cells = []
    for model, dataset, shared in SETTINGS[profile]:
        for seed in range(seeds):
            cells.append(Cell("bp", model, dataset, seed, profile).with_overrides(**shared))
            cells += [Cell(method, model, dataset, seed, profile).with_overrides(**shared, **v)
                      for method, v in variants(profile)]
    return cells


# -- reading runs back ----------------------------------------------------------------------------

def label(row: pd.Series) -> str:
    if row["method"] not in METHODS:
        return row["method"]
    share = float(hparam(row, "serial_share"))
    parts = [f"{SHORT[row['method']]} K={hparam(row, 'stages')}",
             "SPH" if share == DEFAULT_SHARE else f"serial {share:.0%}" if share else "no SPH"]
    if int(hparam(row, "ds_stride")) > 1:
        parts.append(f"DS/{hparam(row, 'ds_stride')}")
    if hparam(row, "distributed") == "True":
        parts.append("2 procs")
    return " · ".join(parts)


# The declared metrics this report reads, by the short names its tables use (`par.<name>`).
PER_EPOCH = {"epoch_time": EPOCH_TIME.key, "serial_phase": SERIAL_PHASE.key, "comm_mb": COMM_MB.key,
             "comm_mb_without_ds": COMM_MB_FULL.key, "modelled_speedup": SPEEDUP.key,
             "aux_mb": AUX_MB.key, "violation_b1": VIOLATION.name(k=1), "beta_sum_b1": BETA_SUM.name(k=1)}


def _parallel_means(hist: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per run, the mean of each key over the epochs of the parallel phase (serial_phase == 0)."""
    wide = hist.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide = wide.rename(columns={key: name for name, key in PER_EPOCH.items()})
    if "serial_phase" in wide:
        wide = wide[wide["serial_phase"] == 0]
    present = [k for k in keys if k in wide]
    return wide.groupby("run_id")[present].mean()


def labelled_runs(ctx) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = ctx.finished().copy()
    if runs.empty:
        return runs, pd.DataFrame()
    runs["variant"] = runs.apply(label, axis=1)
    runs["serial_share"] = runs.apply(lambda r: float(hparam(r, "serial_share", 1.0)), axis=1)
    runs["ds_stride"] = runs.apply(lambda r: int(hparam(r, "ds_stride", 1)), axis=1)
    runs["distributed"] = runs.apply(lambda r: hparam(r, "distributed") == "True", axis=1)
    runs["stages"] = runs.apply(lambda r: int(float(hparam(r, "stages", 0))), axis=1)
    hist = ctx.history([TEST_ACC.key, TRAIN_TIME.key, *PER_EPOCH.values()], runs)
    per_run = (_parallel_means(hist[hist.key != TEST_ACC.key], list(PER_EPOCH)) if not hist.empty
               else pd.DataFrame())
    runs = runs.merge(per_run.add_prefix("par."), left_on="run_id", right_index=True, how="left")
    return runs, hist


# -- tables ---------------------------------------------------------------------------------------

def _measured_parallel_speedup(runs: pd.DataFrame) -> dict[tuple, float]:
    """(model, dataset, method) -> parallel-phase s/epoch of 1 process / of 2 processes."""
    out = {}
    pure = runs[(runs.serial_share == 0.0) & (runs.ds_stride == 1) & (runs.stages == 2)]
    for (model, dataset, method), g in pure.groupby(["model", "dataset", "method"]):
        one, two = g[~g.distributed]["par.epoch_time"].mean(), g[g.distributed]["par.epoch_time"].mean()
        if one and two and not (math.isnan(one) or math.isnan(two)):
            out[(model, dataset, method)] = one / two
    return out


def main_table(runs: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    table = compare_to_bp(runs, hist, ["dataset", "model"], method_col="variant")
    if table.empty:
        return table
    extra = runs.groupby(["dataset", "model", "variant"]).agg(
        par_epoch=("par.epoch_time", "mean"), modelled=("par.modelled_speedup", "mean"),
        comm=("par.comm_mb", "mean"), comm_full=("par.comm_mb_without_ds", "mean"),
        aux=("par.aux_mb", "mean"), violation=("par.violation_b1", "mean"),
        beta_sum=("par.beta_sum_b1", "mean")).reset_index()
    measured = _measured_parallel_speedup(runs)
    method_of = dict(zip(runs.variant, runs.method))
    extra["measured 2-proc speedup of the parallel phase"] = [
        f"{measured[(r.model, r.dataset, method_of[r.variant])]:.2f}×"
        if "2 procs" in r.variant and (r.model, r.dataset, method_of[r.variant]) in measured else "–"
        for r in extra.itertuples()]

    def fmt(value, pattern):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)

    extra["parallel s/epoch"] = extra.par_epoch.map(lambda v: fmt(v, "{:.2f}"))
    extra["modelled speedup (K devices)"] = extra.modelled.map(lambda v: fmt(v, "{:.2f}×"))
    extra["comm MB/epoch (without DS)"] = [
        "–" if math.isnan(c) else f"{c:.1f} ({f:.1f})" for c, f in zip(extra.comm, extra.comm_full)]
    extra["λ memory MB (host)"] = extra.aux.map(lambda v: fmt(v, "{:.1f}"))
    extra["violation ‖F−λ‖/‖F‖ (b1)"] = extra.violation.map(lambda v: fmt(v, "{:.3f}"))
    extra["β per ‖r‖² (b1)"] = extra.beta_sum.map(lambda v: fmt(v, "{:.2g}"))
    keep = ["dataset", "model", "variant", "violation ‖F−λ‖/‖F‖ (b1)", "β per ‖r‖² (b1)", "parallel s/epoch",
            "measured 2-proc speedup of the parallel phase", "modelled speedup (K devices)",
            "comm MB/epoch (without DS)", "λ memory MB (host)"]
    table = table.merge(extra[keep], on=["dataset", "model", "variant"], how="left")
    # the constraint violation right beside the accuracy it explains
    columns = list(table.columns)
    for col in ("β per ‖r‖² (b1)", "violation ‖F−λ‖/‖F‖ (b1)"):
        columns.remove(col)
        columns.insert(columns.index("test acc %") + 1, col)
    return table[columns]


def verdict_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The accuracy claim per method and K (SPH, no DS, one process): Δ vs BP and the verdict."""
    from suite.report.stats import fmt_diff, margin_verdict, paired_diff_ci
    rows = []
    for (model, dataset), group in runs.groupby(["model", "dataset"]):
        base = 100 * pd.to_numeric(group[group.method == "bp"]["m.test_acc"], errors="coerce")
        bp_seeds = group[group.method == "bp"]["seed"]
        for method in METHODS:
            for k in (2, 4):
                sub = group[(group.method == method) & (group.stages == k) & (group.serial_share == DEFAULT_SHARE)
                            & (group.ds_stride == 1) & ~group.distributed]
                if sub.empty or base.empty:
                    continue
                acc = 100 * pd.to_numeric(sub["m.test_acc"], errors="coerce")
                diff, half, _ = paired_diff_ci(acc.set_axis(sub["seed"]), base.set_axis(bp_seeds))
                n = int(acc.notna().sum())
                violation = sub["par.violation_b1"].mean()
                rows.append({"dataset": dataset, "model": model, "method": f"{SHORT[method]} + SPH", "K": k,
                             "seeds": f"{n} (bp {len(base)})", "bp acc %": f"{base.mean():.2f}",
                             "acc %": f"{acc.mean():.2f}", "Δ vs bp (pts)": fmt_diff(diff, half),
                             "violation (b1, parallel epochs)": "–" if math.isnan(violation) else f"{violation:.3f}",
                             VERDICT_COL:
                                 {"reproduced": "comparable", "not reproduced": "not comparable"}.get(
                                     margin_verdict(diff, half, COMPARABLE_POINTS), "undecided"),
                             RUNS_COL: list(sub["run_id"]) + list(group[group.method == "bp"]["run_id"])})
    return pd.DataFrame(rows)


RUNS_COL = "_run_ids"  # the runs behind a row's verdict (not written to the table)


def add_verdicts(ctx, verdicts: pd.DataFrame) -> None:
    """results/verdicts.md rows: the abstract's "comparable accuracy" claim per method and K."""
    for _, row in verdicts.iterrows():
        outcome = {"comparable": "reproduced", "not comparable": "not reproduced"}.get(row[VERDICT_COL], "undecided")
        why = {"reproduced": "",
               "undecided": f"the CI of Δ straddles −{COMPARABLE_POINTS:g} pt; more seeds would decide"}.get(outcome, (
            f"the parallel phase leaves the boundary violation at {row['violation (b1, parallel epochs)']} (the "
            "stage's output and the λ the next stage trained on differ by that fraction, so the serial forward "
            "feeds the later stages inputs they were not trained on; λ drifts from the activations: the default β "
            "is weak per squared norm at ResNet-20's boundary, and a strong β makes stage 1 unstable at lr 0.1); "
            "β and the stage learning rate are not tuned (docs/layer-parallel.md)"))
        ctx.add_verdict(
            f"{row.method}, K = {row.K}: test accuracy comparable to serial BP on ResNets",
            "Sun et al. 2020/21 (arXiv 2009.01462), abstract",
            f"{row.model} on {row.dataset}, {row.seeds} seeds, profile {ctx.profile} (see the settings table), "
            "default β and lr (paper: ResNet/WRN on CIFAR, settings not available)",
            f"{row['acc %']}% vs BP {row['bp acc %']}% (Δ {row['Δ vs bp (pts)']} pts)",
            f"95% CI of Δ (paired by seed) above −{COMPARABLE_POINTS:g} pt; below it: not reproduced; "
            "straddling: undecided", outcome, why,
            Evidence(ctx.runs[ctx.runs.run_id.isin(row[RUNS_COL])],
                     Setting("untuned", "β, its schedule, the λ update, the SPH split and the stages' lr are the "
                                        "suite's reconstruction at their defaults, none searched")))


def settings_table(profile: str) -> str:
    """The report's opening table; [R] = reconstructed (the paper's value is not available)."""
    model, dataset, shared = SETTINGS[profile][0]
    abstract = "arXiv 2009.01462 v2/v3, abstract"
    rows = [
        ("networks", "ResNet, WideResNet (depths NF)", f"{model} [R]", abstract),
        ("data", "MNIST, CIFAR-10, CIFAR-100", f"{dataset}, {shared.get('train_subset', 'all')} training samples, "
         f"{shared.get('epochs', 'profile')} epochs [R]", abstract),
        ("stages K", "NF", "2 and 4, equal block counts [R]", "–"),
        ("penalty", "NF", "β/2·mean_j r² per sample (= β/d per ‖r‖²), β_0 = 10, ×2 per epoch, cap 1000 [R]", "–"),
        ("λ update, λ start", "NF", "preconditioned gradient step, a = 0.5; first-order solution at the initial "
         "weights [R]", "–"),
        ("SPH serial share", "NF (\"first … then\")", "25%; ablation 0 / 25 / 50% [R]", abstract),
        ("DS filter", "NF", "average pool stride 2, nearest upsampling [R]", abstract),
        ("optimiser", "NF", "SGD lr 0.1, momentum 0.9, wd 1e-4, step schedule (×0.1 at 50% and 75%) over the "
         "whole run, continued by the serial phase [R]", "He et al. 2016 recipe"),
        ("'comparable'", "the abstract's word", f"at most {COMPARABLE_POINTS:g} point below serial BP [R]", abstract),
    ]
    frame = pd.DataFrame(rows, columns=["setting", "published", "used", "source"])
    return "## Settings\n\n" + frame.to_markdown(index=False) + "\n"


def _opening(md_path, settings: str) -> None:
    """Put the settings table first, right after the report's title block."""
    text = md_path.read_text()
    title, _, body = text.partition("\n\n")
    source, _, rest = body.partition("\n\n")
    write_text(md_path, f"{title}\n\n{source}\n\n{settings}\n## Results\n\n{rest}")


NOTES = TARGET_NOTE + """

Columns. *speedup vs bp (measured)*: BP's seconds per epoch over the variant's, end to end, on
this machine (one process unless '2 procs'). *parallel s/epoch*: mean seconds per epoch of the
parallel phase only. *measured 2-proc speedup*: the parallel phase's s/epoch in one process over
that of the same mathematics in 2 worker processes (torch.distributed, gloo), this machine.
*modelled speedup*: the method's K-device model, Σ_steps max_k(stage compute) + communication at
12 GB/s, over Σ_k stage compute (labelled modelled; no device was used). *comm MB/epoch*: λ, μ and
gradients sent between stages per epoch, with the DS filter (and without it, in brackets).
*violation*: relative constraint violation ‖F₁ − λ₁‖/‖F₁‖ at the first stage boundary, mean
over the parallel epochs; *β per ‖r‖²*: the penalty weight of that boundary in the standard
sum-of-squares form (β/d), mean over the parallel epochs. λ (and μ) live in the coordinator's
host memory. 'SPH' = the last 25% of the epochs trained serially by BP (reconstructed share; the
paper's is not available). In the parallel phase `train_loss` is the penalty objective (stage K's
task loss on λ plus the penalties)."""


def report(ctx) -> None:
    runs, hist = labelled_runs(ctx)
    settings = settings_table(ctx.profile if ctx.profile in SETTINGS else "quick")
    if runs.empty:
        _opening(ctx.write_table(pd.DataFrame(), notes=NOTES), settings)
        return
    verdicts = verdict_table(runs)
    add_verdicts(ctx, verdicts)
    verdicts = verdicts.drop(columns=RUNS_COL, errors="ignore")
    claim = ("\n\n## The accuracy claim\n\n"
             + (verdicts.to_markdown(index=False) if len(verdicts) else "_no runs with SPH_")
             + f"\n\nRule: 'comparable' when the whole 95% CI of the difference from serial BP's accuracy in the "
             f"same cell (paired by seed, as a cell's methods share each seed's weights and batches; the ± column) lies above −{COMPARABLE_POINTS:g} point; "
             f"'not comparable' when it lies below; 'undecided' when it straddles −{COMPARABLE_POINTS:g}. "
             "Published: 'comparable' (abstract only, baselines/published.csv "
             "`sun2021-layer-parallel-accuracy`; no number). One seed decides nothing: the `verify` profile runs "
             "≥ 3.")
    _opening(ctx.write_table(main_table(runs, hist), notes=NOTES + claim), settings)
    _sph_figure(ctx, runs)
    _comm_figure(ctx, runs)
    _speedup_figure(ctx, runs)


def _where(ctx, runs) -> str:
    return (f"{', '.join(sorted(runs.dataset.unique()))}, profile {ctx.profile}, "
            f"{runs.seed.nunique()} seed{'s' if runs.seed.nunique() != 1 else ''}")


def _sph_figure(ctx, runs):
    pen = runs[(runs.method == "penalty") & ~runs.distributed & (runs.ds_stride == 1) & (runs.stages == 2)]
    bp = runs[runs.method == "bp"]
    if pen.empty:
        return
    models = sorted(pen.model.unique())
    pen = pen.assign(acc=percent(pd.to_numeric(pen["m.test_acc"], errors="coerce")), line="penalty K=2")
    fig, axes = panels(len(models), panel=(4.0, 3.0), legend_width=1.8)
    for ax, model in zip(axes, models):
        sub = pen[pen.model == model]
        lines_with_seeds(ax, sub, "serial_share", "acc", "line", {"penalty K=2": color("penalty")})
        base = percent(pd.to_numeric(bp[bp.model == model]["m.test_acc"], errors="coerce"))
        if len(base):
            ax.axhline(base.mean(), color=color("bp"), ls="--", lw=1.2, label=f"serial bp (mean of {len(base)})")
        ax.set_xticks(sorted(sub.serial_share.unique()))
        ax.set(title=model, xlabel="share of epochs trained serially (SPH)", ylabel=ACC_LABEL)
    one_legend(fig)
    ctx.save_figure(fig, "sph", "measured",
                    f"Accuracy vs serial share (SPH): penalty, K = 2 stages, vs serial BP ({_where(ctx, pen)}; "
                    "mean and 95% bootstrap CI, dots: seeds)",
                    reproduces="Sun et al. 2021 SPH ablation (arXiv 2009.01462; figure not available)")


def _comm_figure(ctx, runs):
    lp = runs[runs.method.isin(METHODS) & (runs.serial_share < 1.0) & runs["par.comm_mb"].notna()]
    if lp.empty:
        return
    lp = lp.assign(setting=lp.apply(lambda r: f"{SHORT[r.method]} K={r.stages}, DS stride {r.ds_stride}", axis=1))
    filtered = bool((lp.ds_stride > 1).any())
    per = lp.groupby(["method", "setting"], as_index=False)[["par.comm_mb", "par.comm_mb_without_ds"]].mean()
    per = per.sort_values(["method", "setting"])
    fig, axes = panels(1, panel=(max(5.5, 1.1 * len(per)), 3.2), legend_width=2.0 if filtered else 0.2)
    ax = axes[0]
    x = range(len(per))
    if filtered:
        ax.bar([i - 0.2 for i in x], per["par.comm_mb"], 0.4, color=[color(m) for m in per.method], label="sent")
        ax.bar([i + 0.2 for i in x], per["par.comm_mb_without_ds"], 0.4, color="white",
               edgecolor=[color(m) for m in per.method], hatch="//", label="without the DS filter")
        one_legend(fig)
    else:  # no run has the filter on: what is sent is what would be sent without it
        ax.bar(list(x), per["par.comm_mb"], 0.6, color=[color(m) for m in per.method])
    ax.set_xticks(list(x), per.setting, rotation=20, ha="right", fontsize=8)
    ax.set(xlabel="", ylabel="MB per epoch between stages")
    title = ("Communication per epoch between stages, with and without the DS filters" if filtered else
             "Communication per epoch between stages (no run here has the DS filters on)")
    ctx.save_figure(fig, "comm", "measured", f"{title} ({_where(ctx, lp)})",
                    reproduces="Sun et al. 2021 DS filters (arXiv 2009.01462; figure not available)")


def _speedup_figure(ctx, runs):
    measured = _measured_parallel_speedup(runs)
    rows = [{"setting": f"{SHORT[m]} K=2", "method": m, "kind": "measured, 2 processes (this machine)", "speedup": s}
            for (_, _, m), s in measured.items()]
    pure = runs[runs.method.isin(METHODS) & ~runs.distributed & (runs.serial_share == 0.0)]
    rows += [{"setting": f"{SHORT[m]} K={k}", "method": m, "kind": f"modelled, {k} devices", "speedup": s}
             for m, k, s in zip(pure.method, pure.stages, pure["par.modelled_speedup"]) if not math.isnan(s)]
    if not rows:
        return
    frame = pd.DataFrame(rows)
    frame["bar"] = frame.setting + "\n" + frame.kind.str.replace(" (this machine)", "", regex=False)
    bars = frame.groupby(["bar", "method", "kind"], as_index=False)["speedup"].mean()
    fig, axes = panels(1, panel=(max(5.5, 1.3 * len(bars)), 3.2), legend_width=0.2)
    ax = axes[0]
    ax.bar(range(len(bars)), bars.speedup, 0.6, color=[color(m) for m in bars.method],
           hatch=["" if k.startswith("measured") else "//" for k in bars.kind], edgecolor="white")
    for i, bar in enumerate(bars.bar):
        values = frame[frame.bar == bar].speedup
        if len(values) > 1:
            ax.scatter([i] * len(values), values, s=10, color="grey", zorder=3)
    ax.set_xticks(range(len(bars)), bars.bar, fontsize=8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="", ylabel="parallel-phase speedup vs 1 process")
    kinds = sorted({"measured" if k.startswith("measured") else "modelled" for k in bars.kind})
    ctx.save_figure(fig, "speedup", "modelled" if "modelled" in kinds else "measured",
                    f"Parallel-phase speedup, {' and '.join(kinds)} ("
                    + ("solid: measured, hatched: modelled; " if len(kinds) > 1 else "") + f"{_where(ctx, runs)})",
                    reproduces="Sun et al. 2021 speedup claims (abstract; no table available)")


EXPERIMENT = Experiment(name="layer-parallel", title="Serial BP vs penalty and augmented-Lagrangian layer-parallel "
                        "training (± SPH, ± DS, K = 2 and 4)", source=SOURCE, grid=grid, report=report,
                        profiles=("smoke", "quick", *(("verify",) if "verify" in PROFILES else ()), "paper"))
