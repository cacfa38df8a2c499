"""`gradient-sparsity`: activation and gradient sparsity of backprop and the exact skippable MACs
of a sparsity-aware backward (Sarma et al. 2021, arXiv 2109.07710; docs/papers.md#sarma2021).

The claim's test is a BOUND TEST. A design that skips only zero operands and zero outputs cannot
beat the exact skippable-MAC ratio (dense / needed MACs) of the same network, so the published
range over five ImageNet CNNs is consistent with the suite only if its maximum is at most the
largest ratio among the candidate networks and its minimum at most the fifth-largest (each of the
paper's five networks is bounded by its own ratio; the paper does not name them). Candidates: the
standard ImageNet CNNs in CANDIDATES, measured at initialisation (no trained weights here) on
RANDOM 3×224×224 images (`random-imagenet`, NOT ImageNet), with `update=false` (every step at
the initial weights: the run cannot diverge, and the divergence guard is off). timm ResNets are
built with `zero_init_last=false`: timm's default zero-initialised last BN makes every branch
gradient exactly zero at step 0 (the default build is a labelled control row). The quick profile
adds real MNIST training of the suite's cnn, resnet20 (Conv-BN-ReLU: dZ dense) and resnet20-nobn
(dZ sparse) for the per-layer curves over training.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from suite.config import Cell
from suite.experiments.base import Experiment
from suite.methods.sparsity import method as sp
from suite.report.fairness import Evidence, Setting

METHOD = "bp-sparsity"
# The bound test's candidates, display name -> model: the standard ImageNet CNNs (torchvision's
# and timm's reference set). ResNets without the zero-initialised last BN (see the docstring).
CANDIDATES = {
    "vgg16": "timm:vgg16", "vgg16-bn": "timm:vgg16_bn",
    "resnet18": "timm:resnet18:zero_init_last=false", "resnet34": "timm:resnet34:zero_init_last=false",
    "resnet50": "timm:resnet50:zero_init_last=false", "resnet101": "timm:resnet101:zero_init_last=false",
    "densenet121": "timm:densenet121", "mobilenet-v2": "timm:mobilenetv2_100",
}
# Rows that are not candidates: SiLU makes no exact zeros (should read 1.00×); timm's default
# ResNet build shows the zero-init artefact.
CONTROLS = {"efficientnet-b0 (SiLU)": "timm:efficientnet_b0", "resnet50 (zero-init last BN)": "timm:resnet50"}
NETWORK_OF = {model: name for name, model in (CANDIDATES | CONTROLS).items()}
PAPER_NETWORKS = 5
RANDOM = "random-imagenet"
RANDOM_LABEL = "random inputs, not ImageNet"

# Instrumentation at initialisation: every step sampled, no update (update=false), divergence
# guard off (diverge_factor 0: only a non-finite loss would stop a run), 2 steps at batch 4 on
# CPU. Eval runs on 4 random images (its accuracy means nothing).
TIMM_RUN = {"epochs": 1, "batch_size": 4, "train_subset": 8, "test_subset": 4, "eval_batch_size": 4,
            "measure_flops": False, "sample_every": 1, "log_layers": 0, "update": False, "diverge_factor": 0.0}
# MNIST training: small subset, a few epochs, 4 samples per epoch. The plain cnn needs lr 0.02
# (as in `summary`); the ResNets use the BP default.
MNIST_MODELS = {"cnn": {"lr": 0.02}, "resnet20": {}, "resnet20-nobn": {}}
MNIST_RUN = {"smoke": {"sample_every": 2},
             "quick": {"epochs": 4, "train_subset": 2048, "test_subset": 1000, "sample_every": 4},
             "paper": {}}


def grid(profile: str, seeds: int) -> list[Cell]:
    cells = []
    timm_models = list((CANDIDATES | CONTROLS).values())
    if profile == "paper":  # CIFAR-10 training (GPU) + the candidates at batch 32 on random inputs
        for model in ["resnet20", "resnet20-nobn", "resnet18", "resnet18-nobn"]:
            cells += [Cell(METHOD, model, "cifar10", s, profile) for s in range(seeds)]
        timm_run = TIMM_RUN | {"batch_size": 32, "train_subset": 128, "test_subset": 32, "eval_batch_size": 32}
        return cells + [Cell(METHOD, m, RANDOM, s, profile).with_overrides(**timm_run)
                        for m in timm_models for s in range(seeds)]
    if profile not in MNIST_RUN:
        return []
    mnist_models = MNIST_MODELS if profile == "quick" else {"cnn": {"lr": 0.02}, "resnet20-nobn": {}}
    for model, extra in mnist_models.items():
        cells += [Cell(METHOD, model, "mnist", s, profile).with_overrides(**MNIST_RUN[profile], **extra)
                  for s in range(seeds)]
    if profile == "smoke":
        timm_models = [CANDIDATES["mobilenet-v2"]]
    return cells + [Cell(METHOD, m, RANDOM, s, profile).with_overrides(**TIMM_RUN)
                    for m in timm_models for s in range(seeds)]


FRACTIONS = {"act_in": "act. sparsity (layer input X)", "act_out": "act. sparsity (ReLU output A)",
             "dA": "grad. sparsity dL/dA", "dZ": "grad. sparsity dL/dZ"}
SPEEDUPS = {"speedup_bwd_out": "backprop, output sparsity", "speedup_bwd_in": "backprop, input sparsity",
            "speedup_bwd": "backprop, both", "speedup_fwd": "forward", "speedup_train": "forward + backprop"}


def _input_label(dataset: str) -> str:
    return RANDOM_LABEL if dataset == RANDOM else dataset


def network_table(ctx) -> pd.DataFrame:
    """One row per (model, data): each sp/ quantity averaged over the logged epochs of a run, then
    over seeds (with the seeds' range of the two speedups the bound test uses). A network whose
    runs did not finish is a row that says so."""
    keys = [metric.key for metric in (*[sp.FRACTIONS[k] for k in FRACTIONS], *[sp.SPEEDUPS[k] for k in SPEEDUPS],
                                      sp.SAMPLED_STEPS)]
    hist = ctx.history(keys)
    rows = []
    if not hist.empty:
        per_run = hist.groupby(["run_id", "model", "dataset", "key"], as_index=False)["value"].mean()
        wide = per_run.pivot_table(index=["run_id", "model", "dataset"], columns="key", values="value").reset_index()
        wide[sp.SAMPLED_STEPS.key] = hist[hist.key == sp.SAMPLED_STEPS.key].groupby("run_id")["value"].sum().reindex(
            wide.run_id).to_numpy()
        spread = {f"{k.removeprefix('sp/')}_{stat}": (k, stat) for k in ("sp/speedup_bwd", "sp/speedup_train")
                  for stat in ("min", "max")}
        table = wide.groupby(["model", "dataset"], as_index=False).agg(
            runs=("run_id", "count"), **{k.removeprefix("sp/"): (k, "mean") for k in keys if k in wide}, **spread)
        rows.append(table)
    unfinished = ctx.runs[ctx.runs["status"] != "finished"] if len(ctx.runs) else ctx.runs
    if len(unfinished):
        rows.append(unfinished.groupby(["model", "dataset"], as_index=False).agg(
            not_finished=("run_id", "count"),
            why=("status_reason", lambda r: "; ".join(sorted({str(x)[:120] for x in r if str(x)})))))
    if not rows:
        return pd.DataFrame()
    table = rows[0] if len(rows) == 1 else rows[0].merge(rows[1], on=["model", "dataset"], how="outer")
    for column in ("runs", "not_finished"):
        table[column] = table[column].fillna(0).astype(int) if column in table else 0
    table.insert(0, "network", table.model.map(lambda m: NETWORK_OF.get(m, m)))
    table.insert(2, "inputs", table.pop("dataset").map(_input_label))
    return table


def _published_range(key: str) -> tuple[float, float] | None:
    from suite.report.baselines import published_for
    lo, hi = published_for(f"sarma2021-{key}-min"), published_for(f"sarma2021-{key}-max")
    return None if lo is None or hi is None else (float(lo.value), float(hi.value))


def bound_test(ranges: dict[str, tuple[float, float]], published: tuple[float, float],
               networks: int = PAPER_NETWORKS) -> dict:
    """Whether a published range over `networks` networks is consistent with the candidates'
    skippable-MAC bounds, each given as its (lowest, highest) value over seeds. Each of the
    paper's networks is bounded by its own ratio, so the published maximum needs one candidate
    whose bound reaches it (the largest bound), and the published minimum needs `networks`
    candidates whose bounds reach it (the `networks`-th largest). A check *holds* when the
    published end is at most that bound on every seed, *fails* when it is above it on every seed,
    and is *within the seeds' spread* otherwise."""
    if len(ranges) < networks:
        raise ValueError(f"the bound test needs at least {networks} candidate networks, got {len(ranges)}")
    lows = sorted((low for low, _ in ranges.values()), reverse=True)
    highs = sorted((high for _, high in ranges.values()), reverse=True)

    def judge(value: float, rank: int) -> str:
        return "holds" if value <= lows[rank - 1] else "fails" if value > highs[rank - 1] else "within the seeds' spread"

    def near(value: float) -> list[str]:  # candidates whose seeds' range comes within 10% of the value
        return [n for n, (low, high) in sorted(ranges.items(), key=lambda kv: -kv[1][1])
                if low - 0.1 * value <= value <= high + 0.1 * value]

    lo, hi = published
    checks = {"max": judge(hi, 1), "min": judge(lo, networks)}
    outcome = ("consistent" if all(c == "holds" for c in checks.values()) else
               "inconsistent" if "fails" in checks.values() else "within the seeds' spread")
    return {"outcome": outcome, **checks, "largest": (lows[0], highs[0]),
            "nth_largest": (lows[networks - 1], highs[networks - 1]), "near_max": near(hi), "near_min": near(lo)}


def candidate_ranges(table: pd.DataFrame, column: str) -> dict[str, tuple[float, float]]:
    """Each candidate network's (lowest, highest) `column` over its seeds."""
    rows = table[table.model.isin(CANDIDATES.values()) & table[column].notna()]
    return {n: (low, high) for n, low, high in zip(rows.network, rows[f"{column}_min"], rows[f"{column}_max"])}


def speedup_bars(ctx, table: pd.DataFrame) -> None:
    """The candidates' (and controls') bounds, with the published range as a band."""
    timm = table[table.model.isin((CANDIDATES | CONTROLS).values()) & table["speedup_bwd"].notna()]
    if timm.empty:
        return
    order = [n for n in (*CANDIDATES, *CONTROLS) if n in set(timm.network)]
    panels = [("speedup_bwd", "bwd-speedup", "backprop (dX + dW) vs dense backprop"),
              ("speedup_train", "train-speedup", "forward + backprop vs dense step")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True, layout="constrained")
    for ax, (column, key, title) in zip(axes, panels):
        band = _published_range(key)
        if band:
            ax.axhspan(*band, color="tab:orange", alpha=0.18, label="Sarma et al. 2021 range (5 unnamed CNNs)")
            for end in band:
                ax.axhline(end, color="tab:orange", lw=0.8, ls="--")
        sub = timm.set_index("network").loc[order].reset_index()
        colours = ["tab:blue" if n in CANDIDATES else "tab:gray" for n in sub.network]
        bars = ax.bar(range(len(sub)), sub[column], color=colours,
                      yerr=[sub[column] - sub[f"{column}_min"], sub[f"{column}_max"] - sub[column]], capsize=2)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ax.set_xticks(range(len(sub)), sub.network, rotation=40, ha="right", fontsize=8)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log", base=2)  # ratios; the zero-init control is ~10× the candidates
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set(title=title, xlabel="", ylabel="")
    axes[0].set_ylabel("skippable-MAC bound, dense / needed MACs")
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue"), plt.Rectangle((0, 0), 1, 1, color="tab:gray"),
               plt.Rectangle((0, 0), 1, 1, color="tab:orange", alpha=0.3)]
    fig.legend(handles, ["candidate (standard ImageNet CNN)", "control (not a candidate)",
                         "published range, Sarma et al. 2021 (their accelerator model)"],
               loc="outside lower center", ncol=3, fontsize=8)
    ctx.save_figure(fig, "speedup", "modelled",
                    "Bound test: exact skippable-MAC ratio per network at initialisation, random 224×224 inputs "
                    "(bars: mean over seeds, whiskers: seeds' range)",
                    reproduces="Sarma et al. 2021, abstract: backprop 1.69–5.43×, fwd+bwd 1.68–3.30×")


def layer_curves(ctx) -> None:
    """Per-layer fractions of zeros over epochs, for the runs that trained several epochs."""
    runs = ctx.finished()
    if runs.empty:
        return
    logged = {k for rid in runs.run_id for k in ctx.tracker.metric_keys(rid)}
    keys = [k for name in FRACTIONS for k in sp.LAYER_FRACTIONS[name].keys(logged)]
    hist = ctx.history(keys)
    if hist.empty:
        return
    hist = hist[hist.groupby("run_id")["step"].transform("nunique") > 1]
    if hist.empty:
        return
    quantity_of = {k: name for name in FRACTIONS for k in sp.LAYER_FRACTIONS[name].keys(set(hist.key))}
    hist = hist.assign(layer=hist.key.map(lambda k: sp.LAYER_FRACTIONS[quantity_of[k]].index(k, "layer")),
                       quantity=hist.key.map(quantity_of))
    models = sorted(hist.model.unique())
    quantities = [q for q in FRACTIONS if q in set(hist.quantity)]
    fig, axes = plt.subplots(len(quantities), len(models), figsize=(3.8 * len(models), 2.6 * len(quantities)),
                             squeeze=False, sharey=True)
    for col, model in enumerate(models):
        for row, quantity in enumerate(quantities):
            ax = axes[row][col]
            sub = hist[(hist.model == model) & (hist.quantity == quantity)]
            if not sub.empty:
                sns.lineplot(sub, x="step", y="value", hue="layer", palette="viridis", ax=ax, marker="o",
                             errorbar=None, legend=col == len(models) - 1 and row == 0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=f"{model}: {FRACTIONS[quantity]}" if row == 0 else FRACTIONS[quantity],
                   xlabel="epoch" if row == len(quantities) - 1 else "", ylabel="fraction of zeros", ylim=(-0.02, 1.02))
    if axes[0][-1].get_legend():
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1), title="layer", fontsize=6)
    ctx.save_figure(fig, "layers", "measured", "Per-layer activation and gradient sparsity over training (MNIST)",
                    reproduces="Sarma et al. 2021: sparsity characterisation during training (qualitative)")


def report(ctx) -> None:
    ctx.declare_settings([
        ("networks", "5 ImageNet CNNs (not named in the available text)",
         "bound-test candidates: " + ", ".join(CANDIDATES) + "; controls: " + ", ".join(CONTROLS),
         "Sarma et al. 2021 abstract; the candidates are the standard ImageNet CNNs (this suite's choice)"),
        ("build", "–", "timm, no pretrained weights; ResNets with zero_init_last=false (timm's default "
         "zero-init last BN only in the control row)", "initial weights: no trained ImageNet weights here"),
        ("data", "ImageNet, trained networks", f"random 3×224×224 inputs at initialisation, {TIMM_RUN['train_subset']} "
         f"images at batch {TIMM_RUN['batch_size']} per seed, no update (update=false), divergence guard off; MNIST "
         "training of the small CNNs for the per-layer curves", "no ImageNet here"),
        ("speedup model", "their accelerator's performance model", "exact skippable MACs (dense / needed), an upper "
         "bound for any design that skips only zero operands and outputs", "reconstruction (docs/gradient-sparsity.md)"),
        ("verdict", "–", f"bound test: published max ≤ the largest candidate bound and published min ≤ the "
         f"{PAPER_NETWORKS}th-largest, on every seed (within the seeds' spread: undecided)",
         "suite rule (docs/gradient-sparsity.md#the-bound-test)"),
    ])
    table = network_table(ctx)
    notes = (
        "Sparsity = fraction of exact zeros, mean over layers and over the sampled steps of all epochs "
        "(act_in: layer input X; act_out: output of the activation that follows the layer; dA: dL/dA; "
        "dZ: dL/dZ at the conv/linear output — dense behind BatchNorm). Speedups are MODELLED: dense MACs / "
        "MACs a sparsity-aware execution must still do, counted exactly with indicator tensors through each "
        "layer's geometry, summed over the network; ideal skippable work, not wall-clock time, and so an upper "
        "bound for a design that skips only zeros. `*_min`/`*_max`: the range over seeds. "
        f"Rows marked '{RANDOM_LABEL}' are measured at initialisation (no update) on random 3×224×224 images "
        "(no ImageNet here). `not_finished`/`why`: runs of the network that did not finish. "
        "Paper: backprop 1.69–5.43× vs dense, forward+backward 1.68–3.30× vs a sparsity-agnostic baseline "
        "(their accelerator model, 5 unnamed trained ImageNet CNNs). See docs/gradient-sparsity.md.")
    table = with_range_positions(table).round(3)
    ctx.write_table(table, notes=notes)
    if not table.empty:
        speedup_bars(ctx, table)
        bound_verdicts(ctx, table)
    layer_curves(ctx)


def _position(value: float, band: tuple[float, float] | None) -> str:
    if band is None or pd.isna(value):
        return "–"
    return "below" if value < band[0] else "above" if value > band[1] else "inside"


def with_range_positions(table: pd.DataFrame) -> pd.DataFrame:
    """Where each network's modelled speedups fall against the paper's ranges."""
    if table.empty or "speedup_bwd" not in table:
        return table
    bwd, train = _published_range("bwd-speedup"), _published_range("train-speedup")
    return table.assign(**{"bwd vs paper range": table["speedup_bwd"].map(lambda v: _position(v, bwd)),
                           "train vs paper range": table["speedup_train"].map(lambda v: _position(v, train))})


CLAIMS = (("bwd-speedup", "speedup_bwd", "backprop speedup 1.69–5.43× from sparsity (5 ImageNet CNNs)"),
          ("train-speedup", "speedup_train", "forward+backward speedup 1.68–3.30× from sparsity (5 ImageNet CNNs)"))


def bound_verdicts(ctx, table: pd.DataFrame) -> None:
    """The abstract's two ranges against the candidates' skippable-MAC bounds (`bound_test`)."""
    finished = set(table.model[table.runs > 0])
    missing = [n for n, m in CANDIDATES.items() if m not in finished]
    runs = ctx.runs[ctx.runs.model.isin(CANDIDATES.values())]
    setting = Setting("proxy", "networks at initialisation on random inputs: neither ImageNet nor trained "
                      "weights are here, and the paper's networks are not named")
    source = "Sarma et al. 2021 (arXiv 2109.07710), abstract"
    used = (f"bound test over {len(CANDIDATES) - len(missing)} candidate ImageNet CNNs at initialisation, random "
            "224×224 inputs, exact skippable MACs (paper: 5 unnamed trained ImageNet CNNs, accelerator model)")
    for key, column, claim in CLAIMS:
        band = _published_range(key)
        if band is None:
            continue
        rule = (f"published max {band[1]:.2f}× ≤ largest candidate bound and published min {band[0]:.2f}× ≤ "
                f"{PAPER_NETWORKS}th-largest")
        ranges = candidate_ranges(table, column)
        if missing or len(ranges) < PAPER_NETWORKS:
            ctx.add_verdict(claim + " — bound test", source, used, "–", rule, "undecided",
                            "candidates without a finished run: " + ", ".join(missing or ["–"]))
            continue
        test = bound_test(ranges, band)
        (top_low, top_high), (nth_low, nth_high) = test["largest"], test["nth_largest"]
        figure = (f"max {band[1]:.2f}× vs largest bound {top_low:.2f}–{top_high:.2f}× over seeds: {test['max']}; "
                  f"min {band[0]:.2f}× vs {PAPER_NETWORKS}th-largest {nth_low:.2f}–{nth_high:.2f}×: {test['min']}. "
                  f"Near the top end: {', '.join(test['near_max']) or 'none'}; near the bottom end: "
                  f"{', '.join(test['near_min']) or 'none'}")
        evidence = Evidence(runs, setting)
        if test["outcome"] == "consistent":
            ctx.add_verdict(claim + " — bound test", source, used, figure, rule, "reproduced",
                            "consistent with the bound on every seed: skipping zeros alone can reach both ends of "
                            "the range on standard ImageNet CNNs. A necessary condition, not a reproduction of the "
                            "accelerator's speedups (trained weights, real images and their hardware model are "
                            "not here)", evidence=evidence)
        elif test["outcome"] == "inconsistent":
            ctx.add_verdict(claim + " — bound test", source, used, figure, rule, "not reproduced",
                            "the range exceeds what skipping zeros allows on every seed of the candidates at "
                            "initialisation", evidence=evidence)
        else:
            ctx.add_verdict(claim + " — bound test", source, used, figure, rule, "undecided",
                            "a published end lies within the seeds' spread of the bound that must reach it: the "
                            "bound neither clearly admits nor clearly excludes it at initialisation on random "
                            "inputs (trained weights, which change the sparsity, are not here)")


EXPERIMENT = Experiment(
    name="gradient-sparsity",
    title="Activation/gradient sparsity of backprop and the skippable-MAC bound of a sparsity-aware backward",
    source="Sarma et al. 2021 (arXiv 2109.07710), abstract; counting rules and the bound test reconstructed",
    grid=grid, report=report)
