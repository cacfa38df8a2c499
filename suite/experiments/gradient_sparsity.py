"""`gradient-sparsity`: activation and gradient sparsity of backprop and the exact skippable MACs
of a sparsity-aware backward (Sarma et al. 2021, arXiv 2109.07710; docs/papers.md#sarma2021).

Networks. The paper uses five ImageNet CNNs that its available text does not name; this suite
chooses five common ones: timm resnet50, vgg16_bn, mobilenetv2_100, densenet121 and
efficientnet_b0 (the last uses SiLU, which makes no exact zeros: a control). There is no ImageNet
here, so they run on `random-imagenet`: RANDOM 3×224×224 images and labels, NOT ImageNet, for a
few steps from initialisation at batch 2 (CPU). The quick profile adds real MNIST training of the
suite's cnn, resnet20 (Conv-BN-ReLU: dZ dense) and resnet20-nobn (dZ sparse).

Figures: per-layer sparsity over training (measured fractions of zeros), modelled speedups per
network with the paper's ranges as reference bands. Table: per network, mean sparsity and the
modelled speedups.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from suite.config import Cell
from suite.experiments.base import Experiment
from suite.methods.sparsity import method as sp

METHOD = "bp-sparsity"
TIMM_MODELS = ["timm:resnet50", "timm:vgg16_bn", "timm:mobilenetv2_100", "timm:densenet121", "timm:efficientnet_b0"]
RANDOM = "random-imagenet"
RANDOM_LABEL = "random inputs, not ImageNet"

# A few instrumented steps from initialisation at batch 2: 224×224 timm models are slow on CPU.
# Every step is sampled; eval runs on 2 random images (its accuracy means nothing).
TIMM_RUN = {"epochs": 1, "batch_size": 2, "train_subset": 4, "test_subset": 2, "eval_batch_size": 2,
            "measure_flops": False, "sample_every": 1, "log_layers": 0}
# MNIST training: small subset, a few epochs, 4 samples per epoch. The plain cnn needs lr 0.02
# (as in `summary`); the ResNets use the BP default.
MNIST_MODELS = {"cnn": {"lr": 0.02}, "resnet20": {}, "resnet20-nobn": {}}
MNIST_RUN = {"smoke": {"sample_every": 2},
             "quick": {"epochs": 4, "train_subset": 2048, "test_subset": 1000, "sample_every": 4},
             "paper": {}}


def grid(profile: str, seeds: int) -> list[Cell]:
    cells = []
    if profile == "paper":  # CIFAR-10 training (GPU) + the timm models at batch 32 on random inputs
        for model in ["resnet20", "resnet20-nobn", "resnet18", "resnet18-nobn"]:
            cells += [Cell(METHOD, model, "cifar10", s, profile) for s in range(seeds)]
        timm_run = TIMM_RUN | {"batch_size": 32, "train_subset": 128, "test_subset": 32, "eval_batch_size": 32}
        return cells + [Cell(METHOD, m, RANDOM, s, profile).with_overrides(**timm_run)
                        for m in TIMM_MODELS for s in range(seeds)]
    mnist_models = MNIST_MODELS if profile == "quick" else {"cnn": {"lr": 0.02}, "resnet20-nobn": {}}
    for model, extra in mnist_models.items():
        cells += [Cell(METHOD, model, "mnist", s, profile).with_overrides(**MNIST_RUN[profile], **extra)
                  for s in range(seeds)]
    timm_models = TIMM_MODELS if profile == "quick" else ["timm:mobilenetv2_100"]
    return cells + [Cell(METHOD, m, RANDOM, s, profile).with_overrides(**TIMM_RUN)
                    for m in timm_models for s in range(seeds)]


FRACTIONS = {"act_in": "act. sparsity (layer input X)", "act_out": "act. sparsity (ReLU output A)",
             "dA": "grad. sparsity dL/dA", "dZ": "grad. sparsity dL/dZ"}
SPEEDUPS = {"speedup_bwd_out": "backprop, output sparsity", "speedup_bwd_in": "backprop, input sparsity",
            "speedup_bwd": "backprop, both", "speedup_fwd": "forward", "speedup_train": "forward + backprop"}


def _input_label(dataset: str) -> str:
    return RANDOM_LABEL if dataset == RANDOM else dataset


def network_table(ctx) -> pd.DataFrame:
    """One row per (model, data): each sp/ quantity averaged over the logged epochs, then over seeds."""
    keys = [metric.key for metric in (*[sp.FRACTIONS[k] for k in FRACTIONS], *[sp.SPEEDUPS[k] for k in SPEEDUPS],
                                      sp.SAMPLED_STEPS)]
    hist = ctx.history(keys)
    if hist.empty:
        return pd.DataFrame()
    per_run = hist.groupby(["run_id", "model", "dataset", "key"], as_index=False)["value"].mean()
    wide = per_run.pivot_table(index=["run_id", "model", "dataset"], columns="key", values="value").reset_index()
    wide[sp.SAMPLED_STEPS.key] = hist[hist.key == sp.SAMPLED_STEPS.key].groupby("run_id")["value"].sum().reindex(
        wide.run_id).to_numpy()
    table = wide.groupby(["model", "dataset"], as_index=False).agg(
        runs=("run_id", "count"), **{k.removeprefix("sp/"): (k, "mean") for k in keys if k in wide})
    table.insert(1, "inputs", table.pop("dataset").map(_input_label))
    return table


def _published_range(key: str) -> tuple[float, float] | None:
    from suite.report.baselines import published_for
    lo, hi = published_for(f"sarma2021-{key}-min"), published_for(f"sarma2021-{key}-max")
    return None if lo is None or hi is None else (float(lo.value), float(hi.value))


def speedup_bars(ctx, table: pd.DataFrame) -> None:
    panels = [("speedup_bwd", "bwd-speedup", "backprop (dX + dW) vs dense backprop"),
              ("speedup_train", "train-speedup", "forward + backprop vs sparsity-agnostic step")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (column, key, title) in zip(axes, panels):
        band = _published_range(key)
        if band:
            ax.axhspan(*band, color="tab:orange", alpha=0.18,
                       label=f"Sarma et al. 2021: {band[0]:.2f}–{band[1]:.2f}× (5 ImageNet CNNs, their HW model)")
        sns.barplot(table, x="model", y=column, hue="inputs", dodge=False, ax=ax)
        for container in ax.containers:
            ax.bar_label(container, fmt="%.2f", fontsize=7)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set(title=title, xlabel="", ylabel="modelled speedup, dense / needed MACs (×)")
        ax.tick_params(axis="x", rotation=40, labelsize=7)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.legend(fontsize=7, loc="upper right")
    ctx.save_figure(fig, "speedup", "modelled",
                    "Speedup from skipping zero operands and outputs, exact MAC counts",
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
        ("networks", "5 ImageNet CNNs (not named in the available text)", ", ".join(TIMM_MODELS),
         "Sarma et al. 2021 abstract; the five are this suite's choice"),
        ("data", "ImageNet, trained networks", "random 3×224×224 inputs at initialisation; MNIST for the trained "
         "small CNNs", "no ImageNet here"),
        ("speedup model", "their accelerator's performance model", "exact skippable MACs (dense / needed)",
         "reconstruction (docs/gradient-sparsity.md)"),
    ])
    table = network_table(ctx)
    notes = (
        "Sparsity = fraction of exact zeros, mean over layers and over the sampled steps of all epochs "
        "(act_in: layer input X; act_out: output of the activation that follows the layer; dA: dL/dA; "
        "dZ: dL/dZ at the conv/linear output — dense behind BatchNorm). Speedups are MODELLED: dense MACs / "
        "MACs a sparsity-aware execution must still do, counted exactly with indicator tensors through each "
        "layer's geometry, summed over the network; ideal skippable work, not wall-clock time. "
        f"Rows marked '{RANDOM_LABEL}' ran a few steps from initialisation at batch 2 on random 3×224×224 images "
        "(no ImageNet here); timm ResNets zero-initialise each block's last BN, so their branch gradients are "
        "exactly zero at step 0. The paper's five CNNs are not named in its available text; these five are "
        "this suite's choice. Paper: backprop 1.69–5.43× vs dense, forward+backward 1.68–3.30× vs a "
        "sparsity-agnostic baseline (their accelerator model). See docs/gradient-sparsity.md.")
    table = with_range_positions(table)
    ctx.write_table(table, notes=notes)
    if not table.empty:
        speedup_bars(ctx, table)
        range_verdicts(ctx, table)
    layer_curves(ctx)


def _position(value: float, band: tuple[float, float] | None) -> str:
    if band is None or pd.isna(value):
        return "–"
    return "below" if value < band[0] else "above" if value > band[1] else "inside"


def with_range_positions(table: pd.DataFrame) -> pd.DataFrame:
    """Where each network's modelled speedups fall against the paper's ranges."""
    if table.empty:
        return table
    bwd, train = _published_range("bwd-speedup"), _published_range("train-speedup")
    return table.assign(**{"bwd vs paper range": table["speedup_bwd"].map(lambda v: _position(v, bwd)),
                           "train vs paper range": table["speedup_train"].map(lambda v: _position(v, train))})


def range_verdicts(ctx, table: pd.DataFrame) -> None:
    """The abstract's two ranges against the five timm CNNs. Not a reproduction: the paper's five
    networks are not named in its available text, it trained them on ImageNet and modelled its own
    accelerator, while these are exact MAC counts at initialisation on random inputs."""
    timm = table[table.model.str.startswith("timm:")]
    for key, column, claim in (("bwd-speedup", "speedup_bwd", "backprop speedup 1.69–5.43× from sparsity"),
                               ("train-speedup", "speedup_train", "training-step speedup 1.68–3.30× from sparsity")):
        band = _published_range(key)
        if band is None or timm.empty:
            continue
        positions = timm[column].map(lambda v, band=band: _position(v, band))
        counts = ", ".join(f"{n} {pos}" for pos, n in positions.value_counts().items())
        figures = ", ".join(f"{m.removeprefix('timm:')} {v:.2f}×" for m, v in zip(timm.model, timm[column]))
        ctx.add_verdict(claim, "Sarma et al. 2021 (arXiv 2109.07710), abstract",
                        f"{len(timm)} timm CNNs, a few BP steps at initialisation on random 224×224 inputs, exact "
                        "MAC counts (paper: 5 unnamed ImageNet CNNs, trained, accelerator model)",
                        f"{figures} ({counts} the range)", "modelled speedup of each network inside the published range",
                        "not testable here",
                        "no ImageNet and the paper's networks are not named: the positions are reported, not judged")


EXPERIMENT = Experiment(
    name="gradient-sparsity",
    title="Activation/gradient sparsity of backprop and modelled speedups of a sparsity-aware backward",
    source="Sarma et al. 2021 (arXiv 2109.07710), abstract; counting rules reconstructed", grid=grid, report=report)
