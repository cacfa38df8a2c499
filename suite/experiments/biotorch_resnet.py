"""`biotorch-resnet`: BP vs DFA vs FA on ResNet-20 and ResNet-56, SGD and Adam — BioTorch's
CIFAR-10 benchmark table (jsalbert/biotorch `Benchmarks.md`, top-1 error %; rows in
baselines/published.csv).

`paper`: CIFAR-10, ResNet-20 and ResNet-56, SGD (the suite's He et al. recipe: lr 0.1,
momentum 0.9, wd 1e-4, step schedule) and Adam (lr 1e-3, no weight decay), 164 epochs.
BioTorch's exact per-method configuration files were not read: the optimiser settings here are
the suite's, not theirs. `quick`: the same grid on MNIST but ResNet-20 only, 1000 training
samples, 2 epochs, 1000 test samples (ResNet-56 does not fit the quick budget on 2 CPU cores);
its numbers are not comparable with the CIFAR-10 table, which is shown for reference only.
"""

from __future__ import annotations

import pandas as pd

from suite.config import Cell
from suite.experiments.base import Experiment
from suite.experiments.feedback_common import (
    accuracy_figure,
    alignment_figure,
    variant,
    with_labels,
)
from suite.report.baselines import load_published
from suite.report.stats import summarise

SOURCE = "BioTorch Benchmarks.md (jsalbert/biotorch), CIFAR-10 top-1 error, ResNet-20/56, SGD and Adam"
METHODS = ("bp", "dfa", "fa")
OPTIMISERS = {"sgd": {}, "adam": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}}
SETTINGS = {  # models, dataset, run settings
    "smoke": (["resnet20"], "mnist", {"epochs": 1}),
    "quick": (["resnet20"], "mnist", {"epochs": 2, "train_subset": 1000, "test_subset": 1000}),
    "paper": (["resnet20", "resnet56"], "cifar10", {"epochs": 164}),
}


def grid(profile: str, seeds: int) -> list[Cell]:
    models, dataset, run = SETTINGS[profile]
    return [Cell(m, model, dataset, s, profile).with_overrides(**run, **opt)
            for model in models for opt in OPTIMISERS.values() for m in METHODS for s in range(seeds)]


def _published() -> pd.DataFrame:
    pub = load_published()
    pub = pub[pub.key.str.startswith("biotorch-")].copy()
    pub["optimiser"] = pub.key.str.extract(r"-(sgd|adam)-", expand=False)
    return pub[["method", "model", "optimiser", "value"]].rename(columns={"value": "published err % (CIFAR-10)"})


def report(ctx) -> None:
    runs = ctx.finished()
    if runs.empty:
        ctx.write_table(pd.DataFrame(), notes="No finished runs.")
        return
    runs = runs.assign(optimiser=runs.get("o.optimizer", pd.Series("sgd", index=runs.index)).fillna("sgd"))
    runs["err"] = 1 - pd.to_numeric(runs["m.test_acc"], errors="coerce")
    table = summarise(runs, ["dataset", "model", "optimiser", "method"], "err", scale=100)
    table = table.rename(columns={"text": "top-1 err % (mean ± CI)"}).drop(columns=["mean", "ci95"])
    table = table.merge(_published(), on=["method", "model", "optimiser"], how="left")
    comparable = (runs.dataset == "cifar10").all()
    ctx.write_table(table, notes=(
        "Published values: BioTorch Benchmarks.md, CIFAR-10 (best-validation checkpoint of 45k/5k split). "
        + ("" if comparable else "This run is not on CIFAR-10 (quick profile: MNIST, ResNet-20 only, 1000 samples, "
           "2 epochs): the published column is for reference, not a target. ")
        + "Optimiser settings are the suite's (SGD: He et al. recipe; Adam: lr 1e-3), not BioTorch's config files."))

    keys = ["test_acc"] + sorted({c[2:] for c in runs.columns if c.startswith("m.align/") and c.endswith("_mean")
                                  and c != "m.align/mean"})
    runs["variant"] = variant(runs) + " · " + runs["optimiser"]
    hist = ctx.history(keys, runs).merge(runs[["run_id", "optimiser"]], on="run_id", how="left")
    hist = with_labels(hist, runs, ["model", "optimiser"])
    hist["variant"] = hist["variant"] + " · " + hist["optimiser"]
    accuracy_figure(ctx, hist, "model", "accuracy", "Test accuracy vs epoch per method and optimiser", SOURCE)
    alignment_figure(ctx, hist[hist.method != "bp"], "alignment",
                     "Gradient alignment with BP vs epoch per unit (0 = stem, i = block i-1)", SOURCE)


EXPERIMENT = Experiment(name="biotorch-resnet", title="BP vs DFA vs FA on CIFAR ResNets (BioTorch benchmark)",
                        source=SOURCE, grid=grid, report=report)
