"""`layer-parallel`: serial BP vs the penalty and augmented-Lagrangian layer-parallel methods, with
and without the serial-parallel hybrid (SPH) and the downsampling (DS) filters (Sun et al., arXiv
2009.01462 v2/v3; METHODS-BRIEF §1 (e)).

The paper's tables are not available [NF], so there is no published number to compare against:
the outputs are the regenerated *shape* of its main table (accuracy, speedup, communication per
variant), the SPH ablation (accuracy vs serial share) and the communication volume with and
without DS.

Grids. `paper`: ResNet-56 and WRN-16-4 on CIFAR-10/100, K = 4 stages. `quick`: ResNet-20 on
MNIST (1500 training samples, 4 epochs, K = 2): every method variant in one process, plus the
pure parallel phase of both methods in 2 worker processes for the measured speedup. `smoke`: the
same on odenet:4-4.

Speedups, each labelled: *measured* — this machine's seconds per epoch of the parallel phase, 2
worker processes vs the same mathematics in 1 process (and end-to-end vs BP); *modelled* — the
method's own K-device model, Σ_steps max_k(stage compute) + communication at `link_gb_per_s`,
against the sum of the stages' compute (METHODS-BRIEF §1 "Speedup model").
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from suite.config import Cell
from suite.experiments.base import Experiment
from suite.report.compare import TARGET_NOTE, compare_to_bp
from suite.report.context import hparam

SOURCE = ("Sun et al. 2020/2021, arXiv 2009.01462 v2/v3 (main table, SPH ablation, DS communication); "
          "tables not available, shapes regenerated [NF]")
METHODS = ("penalty", "augmented-lagrangian")
SHORT = {"penalty": "penalty", "augmented-lagrangian": "AL"}

# (model, dataset, settings shared by every cell, layer-parallel settings)
SETTINGS = {
    "paper": [(m, d, {}, {"stages": 4}) for m in ("resnet56", "wrn16-4") for d in ("cifar10", "cifar100")],
    "quick": [("resnet20", "mnist", {"epochs": 4, "train_subset": 1500, "test_subset": 500}, {})],
    "smoke": [("odenet:4-4", "mnist", {"epochs": 2}, {})],
}
SERIAL_SHARES = {"paper": (0.0, 0.25, 0.5), "quick": (0.0, 0.25, 0.5), "smoke": (0.0, 0.5)}
DEFAULT_SHARE = 0.25


def grid(profile: str, seeds: int) -> list[Cell]:
    cells = []
    for model, dataset, shared, lp in SETTINGS[profile]:
        for seed in range(seeds):
            cells.append(Cell("bp", model, dataset, seed, profile).with_overrides(**shared))
            for method in METHODS:
                variants = [{"serial_share": share, "ds_stride": ds}  # the main table: ± SPH × ± DS
                            for ds in (1, 2) for share in (0.0, DEFAULT_SHARE)]
                if method == "penalty":  # the SPH ablation (penalty only, no DS)
                    variants += [{"serial_share": share, "ds_stride": 1} for share in SERIAL_SHARES[profile]]
                variants.append({"serial_share": 0.0, "ds_stride": 1, "distributed": "true"})  # measured speedup
                cells += [Cell(method, model, dataset, seed, profile).with_overrides(**shared, **lp, **v)
                          for v in variants]
    return cells


# -- reading runs back ----------------------------------------------------------------------------

def label(row: pd.Series) -> str:
    if row["method"] not in METHODS:
        return row["method"]
    share = float(hparam(row, "serial_share"))
    parts = [SHORT[row["method"]], "SPH" if share == DEFAULT_SHARE else f"serial {share:.0%}" if share else "no SPH"]
    if int(hparam(row, "ds_stride")) > 1:
        parts.append(f"DS/{hparam(row, 'ds_stride')}")
    if hparam(row, "distributed") == "True":
        parts.append("2 procs")
    return " · ".join(parts)


def _parallel_means(hist: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per run, the mean of each key over the epochs of the parallel phase (serial_phase == 0)."""
    wide = hist.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
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
    keys = ["test_acc", "train_time", "epoch_time", "serial_phase", "comm_mb", "comm_mb_without_ds",
            "modelled_speedup", "aux_mb", "violation_b1"]
    hist = ctx.history(keys, runs)
    per_run = _parallel_means(hist[hist.key != "test_acc"], keys[2:]) if not hist.empty else pd.DataFrame()
    runs = runs.merge(per_run.add_prefix("par."), left_on="run_id", right_index=True, how="left")
    return runs, hist


# -- tables ---------------------------------------------------------------------------------------

def _measured_parallel_speedup(runs: pd.DataFrame) -> dict[tuple, float]:
    """(model, dataset, method) -> parallel-phase s/epoch of 1 process / of 2 processes."""
    out = {}
    pure = runs[(runs.serial_share == 0.0) & (runs.ds_stride == 1)]
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
        aux=("par.aux_mb", "mean"), violation=("par.violation_b1", "mean")).reset_index()
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
    extra["violation ‖F−λ‖/‖F‖"] = extra.violation.map(lambda v: fmt(v, "{:.3f}"))
    keep = ["dataset", "model", "variant", "parallel s/epoch", "measured 2-proc speedup of the parallel phase",
            "modelled speedup (K devices)", "comm MB/epoch (without DS)", "λ memory MB (host)", "violation ‖F−λ‖/‖F‖"]
    return table.merge(extra[keep], on=["dataset", "model", "variant"], how="left")


NOTES = TARGET_NOTE + """

Columns. *speedup vs bp (measured)*: BP's seconds per epoch over the variant's, end to end, on
this machine (one process unless '2 procs'). *parallel s/epoch*: mean seconds per epoch of the
parallel phase only. *measured 2-proc speedup*: the parallel phase's s/epoch in one process over
that of the same mathematics in 2 worker processes (torch.distributed, gloo), this machine.
*modelled speedup*: the method's K-device model, Σ_steps max_k(stage compute) + communication at
12 GB/s, over Σ_k stage compute (labelled modelled; no device was used). *comm MB/epoch*: λ, μ and
gradients sent between stages per epoch, with the DS filter (and without it, in brackets).
*violation*: relative constraint violation at the first stage boundary, mean over the parallel
epochs. λ (and μ) live in the coordinator's host memory. 'SPH' = the last 25% of the epochs
trained serially by BP (reconstructed share; the paper's is not available)."""


def _published_note() -> str:
    """The paper's claims against this run: only the abstract's words are available, so no verdict."""
    from suite.report.baselines import published_for
    rows = [published_for(k) for k in ("sun2021-layer-parallel-accuracy", "sun2021-layer-parallel-speedup")]
    table = pd.DataFrame([{"published (baselines/published.csv)": r.metric, "value": "–", "source": r.source,
                           "notes": r.notes, "reproduced": "see table above", "verdict": "no published value"}
                          for r in rows if r is not None])
    return table.to_markdown(index=False)


def report(ctx) -> None:
    runs, hist = labelled_runs(ctx)
    if runs.empty:
        ctx.write_table(pd.DataFrame(), notes=NOTES)
        return
    ctx.write_table(main_table(runs, hist), notes=NOTES + "\n\n" + _published_note())
    _sph_figure(ctx, runs)
    _comm_figure(ctx, runs)
    _speedup_figure(ctx, runs)


def _sph_figure(ctx, runs):
    pen = runs[(runs.method == "penalty") & ~runs.distributed & (runs.ds_stride == 1)]
    bp = runs[runs.method == "bp"]
    if pen.empty:
        return
    models = sorted(pen.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = pen[pen.model == model].assign(acc=lambda f: 100 * f["m.test_acc"].astype(float))
        sns.pointplot(sub, x="serial_share", y="acc", ax=ax, errorbar=("ci", 95), color="C1", label="penalty")
        base = 100 * bp[bp.model == model]["m.test_acc"].astype(float)
        if len(base):
            ax.axhline(base.mean(), color="C0", ls="--", label="serial BP")
        ax.set(title=model, xlabel="share of epochs trained serially (SPH)", ylabel="test accuracy %")
        ax.legend()
    ctx.save_figure(fig, "sph", "measured", "Accuracy vs serial share (SPH)",
                    reproduces="Sun et al. 2021 SPH ablation (METHODS-BRIEF §1 (e) 2; figure not available)")


def _comm_figure(ctx, runs):
    lp = runs[runs.method.isin(METHODS) & (runs.serial_share < 1.0) & runs["par.comm_mb"].notna()]
    if lp.empty:
        return
    lp = lp.assign(stride=lp.ds_stride.map(lambda s: f"DS stride {s}"))
    long = pd.concat([lp.assign(kind="sent", mb=lp["par.comm_mb"]),
                      lp.assign(kind="without DS", mb=lp["par.comm_mb_without_ds"])])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    sns.barplot(long, x="stride", y="mb", hue="kind", ax=ax, errorbar=None)
    ax.set(xlabel="", ylabel="MB per epoch between stages")
    ctx.save_figure(fig, "comm", "measured", "Communication per epoch, ± DS filters",
                    reproduces="Sun et al. 2021 DS filters (METHODS-BRIEF §1 (e) 3; figure not available)")


def _speedup_figure(ctx, runs):
    measured = _measured_parallel_speedup(runs)
    rows = [{"method": SHORT[m], "kind": "measured, 2 processes (this machine)", "speedup": s}
            for (_, _, m), s in measured.items()]
    pure = runs[runs.method.isin(METHODS) & ~runs.distributed & (runs.serial_share == 0.0)]
    rows += [{"method": SHORT[m], "kind": "modelled, K devices", "speedup": s}
             for m, s in zip(pure.method, pure["par.modelled_speedup"]) if not math.isnan(s)]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    sns.barplot(pd.DataFrame(rows), x="method", y="speedup", hue="kind", ax=ax, errorbar=None)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="", ylabel="parallel-phase speedup vs 1 process")
    ctx.save_figure(fig, "speedup", "modelled",
                    "Parallel-phase speedup, measured and modelled",
                    reproduces="Sun et al. 2021 speedup claims (abstract; no table available)")


EXPERIMENT = Experiment(name="layer-parallel", title="Serial BP vs penalty and augmented-Lagrangian layer-parallel "
                        "training (± SPH, ± DS)", source=SOURCE, grid=grid, report=report)
