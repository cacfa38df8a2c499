"""`summary`: every method × every model × every dataset of the profile, with BP as reference."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from suite.experiments.base import Experiment, cross
from suite.report.stats import summarise

GRIDS = {
    "smoke": (["mlp", "cnn", "resnet20"], ["mnist"]),
    "quick": (["mlp", "cnn", "resnet20"], ["mnist"]),
    "paper": (["resnet20", "resnet56", "resnet18", "wrn16-4"], ["cifar10", "cifar100"]),
}


def grid(profile: str, seeds: int):
    from suite.methods import METHODS

    models, datasets = GRIDS[profile]
    return cross(list(METHODS), models, datasets, profile, seeds)


def report(ctx) -> None:
    runs = ctx.runs
    if runs.empty:
        ctx.write_table(runs)
        return
    runs = runs.copy()
    runs["test_acc"] = runs.get("m.test_acc")
    runs["epoch_time"] = runs.get("m.epoch_time")
    acc = summarise(runs[runs.status == "finished"], ["dataset", "model", "method"], "test_acc", scale=100)
    time_ = summarise(runs[runs.status == "finished"], ["dataset", "model", "method"], "epoch_time", digits=2)
    table = acc.rename(columns={"text": "test acc % (mean ± 95% CI)", "n": "seeds"})[
        ["dataset", "model", "method", "test acc % (mean ± 95% CI)", "seeds"]]
    table["s/epoch"] = time_["text"].values
    bp_time = time_[time_.method == "bp"].set_index(["dataset", "model"])["mean"]
    table["speedup vs bp"] = [
        f"{bp_time.get((d, m), float('nan')) / t:.2f}×" if (d, m) in bp_time.index else "–"
        for d, m, t in zip(time_.dataset, time_.model, time_["mean"])]
    skipped = runs[runs.status != "finished"][["dataset", "model", "method", "status", "status_reason"]]
    notes = ""
    if len(skipped):
        notes = "Not finished:\n\n" + skipped.drop_duplicates().to_markdown(index=False)
    ctx.write_table(table, notes=notes)

    hist = ctx.history(["test_acc"])
    if hist.empty:
        return
    models = sorted(hist.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = hist[hist.model == model]
        sns.lineplot(sub, x="step", y="value", hue="method", ax=ax, errorbar=("ci", 95), marker="o")
        ax.set(title=model, xlabel="epoch", ylabel="test accuracy")
    ctx.save_figure(fig, "test-acc", "measured", "Test accuracy vs epoch, every method (mean, 95% CI over seeds)",
                    reproduces="suite summary (no paper figure)")


EXPERIMENT = Experiment(
    name="summary", title="Every method on every model and dataset of the profile",
    source="suite summary (no single paper table)", grid=grid, report=report)
