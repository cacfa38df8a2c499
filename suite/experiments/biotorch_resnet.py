"""`biotorch-resnet`: BP vs DFA vs FA on ResNet-20 and ResNet-56, SGD and Adam — BioTorch's
CIFAR-10 benchmark table (jsalbert/biotorch `Benchmarks.md`, top-1 error %; rows in
baselines/published.csv).

Settings are BioTorch's own benchmark configs (jsalbert/biotorch
`benchmark_configs/cifar10/resnet_20/{sgd,adam}/*.yaml`): Xavier init on every layer, batch 128,
250 epochs, lr ÷10 at epochs 100/150/200 (milestones 0.4/0.6/0.8 of training); SGD momentum 0.9,
weight decay 1e-4, lr 0.1 for BP and FA and 1e-3 for DFA; Adam lr 1e-3, weight decay 1e-4 for
all three. `paper`: CIFAR-10, ResNet-20 and ResNet-56 (ResNet-56 assumed to share ResNet-20's
configs). `quick`: the same per-method settings on MNIST, ResNet-20 only, 1000 training samples,
2 epochs, 1000 test samples: its numbers are not comparable with the CIFAR-10 table, which is
shown for reference only.
"""

from __future__ import annotations

import pandas as pd

from suite.config import Cell
from suite.experiments.base import Experiment
from suite.experiments.feedback_common import (
    accuracy_figure,
    align_keys,
    alignment_figure,
    variant,
    with_labels,
)
from suite.report.baselines import load_published
from suite.report.stats import summarise

SOURCE = "BioTorch Benchmarks.md (jsalbert/biotorch), CIFAR-10 top-1 error, ResNet-20/56, SGD and Adam"
METHODS = ("bp", "dfa", "fa")
CONFIGS = "jsalbert/biotorch benchmark_configs/cifar10/resnet_20"
SHARED = {"init": "xavier", "batch_size": 128, "weight_decay": 0.0001, "momentum": 0.9,
          "schedule": "step", "milestones": "0.4,0.6,0.8", "gamma": 0.1}  # every config file
OPTIMISERS = {  # optimiser -> method -> its config's settings
    "sgd": {"bp": {"lr": 0.1}, "fa": {"lr": 0.1}, "dfa": {"lr": 0.001}},
    "adam": {m: {"optimizer": "adam", "lr": 0.001} for m in METHODS},
}
# BioTorch's own forms of the methods: DFA's feedback replaces each conv/linear layer's input
# gradient (kernel-shaped for convs), FA's feedback is Xavier-initialised (docs/feedback-alignment.md)
BIOTORCH_FORM = {"dfa": {"style": "biotorch"}, "fa": {"feedback": "xavier"}, "bp": {}}
SETTINGS = {  # models, dataset, run settings
    "smoke": (["resnet20"], "mnist", {"epochs": 1}),
    "quick": (["resnet20"], "mnist", {"epochs": 2, "train_subset": 1000, "test_subset": 1000}),
    "paper": (["resnet20", "resnet56"], "cifar10", {"epochs": 250}),
}


def grid(profile: str, seeds: int) -> list[Cell]:
    models, dataset, run = SETTINGS[profile]
    return [Cell(m, model, dataset, s, profile).with_overrides(**SHARED, **run, **opt[m], **BIOTORCH_FORM[m])
            for model in models for opt in OPTIMISERS.values() for m in METHODS for s in range(seeds)]


def declare_settings(ctx) -> None:
    models, dataset, run = SETTINGS[ctx.profile]
    ctx.declare_settings([
        ("dataset", "CIFAR-10 (45k/5k split, best validation checkpoint)", dataset, "BioTorch Benchmarks.md"),
        ("models", "ResNet-20, ResNet-56", ", ".join(models), "BioTorch Benchmarks.md"),
        ("init", "Xavier, every layer", "xavier", f"{CONFIGS}/*.yaml"),
        ("epochs", "250", str(run["epochs"]), f"{CONFIGS}/*.yaml; quick: this suite's budget"),
        ("schedule", "lr ÷10 at epochs 100, 150, 200", "÷10 at 40%, 60%, 80% of training", f"{CONFIGS}/*.yaml"),
        ("SGD", "momentum 0.9, wd 1e-4; lr 0.1 (BP, FA), 1e-3 (DFA)", "the same", f"{CONFIGS}/sgd/*.yaml"),
        ("Adam", "lr 1e-3, wd 1e-4, betas 0.9/0.999", "the same", f"{CONFIGS}/adam/*.yaml"),
        ("ResNet-56", "its own configs", "ResNet-20's configs", "assumption (ResNet-56 files not read)"),
        ("method forms", "BioTorch's layers", "dfa style=biotorch, fa feedback=xavier", "jsalbert/biotorch "
         "biotorch/layers (read, not copied)"),
    ])


def _published() -> pd.DataFrame:
    pub = load_published()
    pub = pub[pub.key.str.startswith("biotorch-")].copy()
    pub["optimiser"] = pub.key.str.extract(r"-(sgd|adam)-", expand=False)
    return pub[["method", "model", "optimiser", "value"]].rename(columns={"value": "published err % (CIFAR-10)"})


def report(ctx) -> None:
    declare_settings(ctx)
    runs = ctx.finished()
    if runs.empty:
        ctx.write_table(pd.DataFrame(), notes="No finished runs.")
        return
    runs = runs.assign(optimiser=runs.get("o.optimizer", pd.Series("sgd", index=runs.index)).fillna("sgd"))
    runs["err"] = 1 - pd.to_numeric(runs["m.test_acc"], errors="coerce")
    table = summarise(runs, ["dataset", "model", "optimiser", "method"], "err", scale=100, bounds=(0, 100))
    table = table.rename(columns={"text": "top-1 err % (mean ± CI)"}).drop(columns=["mean", "ci95"])
    table = table.merge(_published(), on=["method", "model", "optimiser"], how="left")
    comparable = (runs.dataset == "cifar10").all()
    ctx.write_table(table, notes=(
        "Published values: BioTorch Benchmarks.md, CIFAR-10 (best-validation checkpoint of 45k/5k split). "
        + ("" if comparable else "This run is not on CIFAR-10 (quick profile: MNIST, ResNet-20 only, 1000 samples, "
           "2 epochs): the published column is for reference, not a target. ")
        + "Settings: BioTorch's config files (see the settings table)."))
    if not comparable:
        ctx.add_verdict("BioTorch's CIFAR-10 top-1 errors of BP, FA and DFA on ResNet-20/56", SOURCE,
                        f"{runs.dataset.iloc[0]} (the quick profile), ResNet-20, BioTorch's optimiser settings",
                        "–", "error within the tolerance in baselines/published.csv", "not testable here",
                        "CIFAR-10 cannot be downloaded on this machine; `--profile paper` runs the table where it can")

    keys = ["test_acc", *align_keys(runs)]
    runs["variant"] = variant(runs) + " · " + runs["optimiser"]
    hist = ctx.history(keys, runs).merge(runs[["run_id", "optimiser"]], on="run_id", how="left")
    hist = with_labels(hist, runs, ["model", "optimiser"])
    hist["variant"] = hist["variant"] + " · " + hist["optimiser"]
    where = f"{', '.join(sorted(runs.dataset.unique()))}, profile {ctx.profile}, {runs.seed.nunique()} seeds"
    accuracy_figure(ctx, hist, "model", "accuracy", f"Test accuracy vs epoch per method and optimiser ({where})",
                    SOURCE)
    alignment_figure(ctx, hist[hist.method != "bp"], "alignment",
                     f"Gradient alignment with BP vs epoch per unit (0 = stem, i = block i-1; {where})", SOURCE)


EXPERIMENT = Experiment(name="biotorch-resnet", title="BP vs DFA vs FA on CIFAR ResNets (BioTorch benchmark)",
                        source=SOURCE, grid=grid, report=report)
