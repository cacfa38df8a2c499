"""`mgrit`: layer-parallel training by MGRIT — serial BP vs one-shot MGRIT (1 and 2 forward
iterations, 1 adjoint iteration per step) vs MGRIT solved to a tolerance (Günther et al. 2020,
SIMODS 2(1), arXiv 1812.04352), and TorchBraid's MNIST example (github.com/Multilevel-NN/torchbraid,
`examples/mnist`) at its own setting.

What is reconstructed [R]. Only the paper's abstract was available: it claims training
"similar" to layer-serial training with inexact (one-shot) gradients, and a speedup through
concurrency; its figures, networks, iteration budgets and optimiser settings (full-batch L-BFGS
in the authors' code) are not available [NF]. The outputs regenerate the kinds of result such a
paper shows — loss and accuracy vs iteration for serial vs one-shot; MGRIT residual vs
iteration; run time vs workers — on TorchBraid's MNIST network, with the suite's SGD at one
learning rate for every variant, so the variants differ only in how the gradient is computed.

Rules. "Similar" = test accuracy at most 1 point below BP's in the same cell, decided on the 95%
CI of the difference (paired by seed: a cell's methods share each seed's weights and batches):
similar when the whole CI lies above −1 pt, not similar when it lies
below, undecided when it straddles −1 pt (suite/report/stats.py `margin_verdict`). A one-shot row is a
test of the claim only where the run has ≥ 3 MGRIT levels and depth ≥ 16: with 2 levels the
coarse system is solved exactly, and on 8 steps with c = 4 two iterations already make the
forward exact, so such a "one-shot" run is serial BP in disguise. Rows outside the rule say so.

Two settings per profile:
* `one-shot`: `odenet:<N>-8-fc` (TorchBraid's step layer, a trained 3×3 stem at half resolution,
  TorchBraid's closing layer); bp; mgrit 1+1 and 2+1 iterations (full V-cycles, cold starts);
  mgrit to tol 1e-6 (should train like bp); mgrit 2+1 with TorchBraid's options (first down-cycle
  skipped, warm starts); the one-shot variants again with the layer chunks in 2 processes
  (measured run time; the same mathematics bit for bit; `quick` and `verify` keep the 2+1 one,
  and `quick` leaves out the solve to tolerance).
* `torchbraid`: TorchBraid's `examples/mnist` as published — 32 steps, 3 channels, its network
  (`odenet:32-3-tb`), 2500 training images (5% of MNIST's 50000), 500 held-out images, batch 50,
  3 epochs, SGD lr 0.01, momentum 0.9, no weight decay, constant rate, MGRIT 3 levels, c = 4,
  2 forward + 1 adjoint iterations, down-cycle skipped, warm restarts — `bp` and `mgrit`, beside
  the 89–90% its notebook printed.

Profiles. `smoke`: both settings shrunk to seconds. `quick`: one-shot on odenet:16-8-fc, 3000
training samples, 3 epochs; torchbraid as published. `verify`: one-shot on odenet:32-8-fc with
12000 samples and 5 epochs, torchbraid as published, ≥ 3 seeds. `paper`: odenet:128-8-fc on full
MNIST, 10 epochs, batch 50, lr 0.01; torchbraid as published.
"""

from __future__ import annotations

import math

import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from suite.atomic import write_text
from suite.config import PROFILES, Cell
from suite.experiments.base import Experiment
from suite.methods.layer_parallel.mgrit import coarsen
from suite.methods.layer_parallel.mgrit_method import (
    ADJ_ITERS,
    ADJ_RESIDUAL,
    FWD_ITERS,
    FWD_RESIDUAL,
    PROBE_REL,
    PROBE_RES0,
    SPEEDUP,
    SPEEDUP_P,
    WORKERS,
)
from suite.metrics import TEST_ACC, TRAIN_LOSS, TRAIN_TIME
from suite.report.compare import TARGET_NOTE, accuracy_by_seed, compare_to_bp
from suite.report.context import hparam, with_variants
from suite.report.fairness import Evidence, Setting
from suite.report.figures import epoch_axis, one_legend, panels, percent
from suite.report.palette import colors
from suite.report.stats import fmt_diff, margin_verdict, mean_ci, paired_diff_ci, tolerance_verdict

SIMILAR_POINTS = 1.0  # "similar to serial training": within this many points of BP's accuracy

# TorchBraid's examples/mnist (mnist_script.py defaults, network_architecture.py); the data split
# is ours: a fixed random 2500-image subset (its first 2500) and 500 MNIST test images (its
# training images 2500–2999); the probe split (250) is held out of train_subset, leaving 2500
TORCHBRAID = ("odenet:32-3-tb", "mnist",
              {"epochs": 3, "batch_size": 50, "train_subset": 2750, "probe_samples": 250, "test_subset": 500,
               "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "schedule": "constant"})
TORCHBRAID_MGRIT = {"cfactor": 4, "max_levels": 3, "fwd_iters": 2, "bwd_iters": 1,
                    "skip_downcycle": "true", "warm_start": "true"}
TORCHBRAID_TOLERANCE = 2.0  # pts; the notebook's own epochs 1–3 span 89–90% on 500 images
TORCHBRAID_PUBLISHED = 90.0  # % after 3 epochs (450/500); 89% (443/500) after epoch 1, 90% (452/500) after 2

# (model, dataset, settings shared by every cell) of the one-shot setting
SETTINGS = {
    "paper": ("odenet:128-8-fc", "mnist", {"epochs": 10, "batch_size": 50, "lr": 0.01}),
    "verify": ("odenet:32-8-fc", "mnist", {"epochs": 5, "train_subset": 12000, "test_subset": 2000, "lr": 0.05}),
    "quick": ("odenet:16-8-fc", "mnist", {"epochs": 3, "train_subset": 3000, "test_subset": 1000, "lr": 0.05}),
    "smoke": ("odenet:8-4-fc", "mnist", {"epochs": 2, "lr": 0.05}),
}
SMOKE_TORCHBRAID = ("odenet:8-3-tb", "mnist", {"epochs": 1, "batch_size": 32, "lr": 0.01, "momentum": 0.9,
                                               "weight_decay": 0.0, "schedule": "constant"})
TB_OPTIONS = {"skip_downcycle": "true", "warm_start": "true"}
# (label, mgrit overrides)
VARIANTS = (
    ("mgrit 1+1 it", {"fwd_iters": 1, "bwd_iters": 1}),
    ("mgrit 2+1 it", {"fwd_iters": 2, "bwd_iters": 1}),
    (f"mgrit tol {1e-6:g}", {"tol": 1e-6}),  # the label `variant` gives: "mgrit tol 1e-06"
    ("mgrit 2+1 it, skip+warm", {"fwd_iters": 2, "bwd_iters": 1, **TB_OPTIONS}),
    ("mgrit 1+1 it, 2 proc", {"fwd_iters": 1, "bwd_iters": 1, "workers": 2}),
    ("mgrit 2+1 it, 2 proc", {"fwd_iters": 2, "bwd_iters": 1, "workers": 2}),
)
ORDER = ("bp", *(label for label, _ in VARIANTS))
# BP black, the MGRIT variants in shades of mgrit's colour (suite/report/palette.py); line styles
# and markers tell them apart as well
PALETTE = colors(ORDER)


def grid(profile: str, seeds: int) -> list[Cell]:
    model, dataset, shared = SETTINGS[profile]
    tb_model, tb_data, tb_shared = SMOKE_TORCHBRAID if profile == "smoke" else TORCHBRAID
    # to keep the budgets: verify keeps one 2-process row (the measured speed); quick also drops
    # the solve to tolerance (a unit test shows it equals a BP step)
    variants = {"verify": VARIANTS[:4] + VARIANTS[5:], "quick": VARIANTS[:2] + VARIANTS[3:4] + VARIANTS[5:]}.get(
        profile, VARIANTS)
    cells = []
    for seed in range(seeds):
        cells.append(Cell("bp", model, dataset, seed, profile).with_overrides(**shared))
        cells += [Cell("mgrit", model, dataset, seed, profile).with_overrides(**shared, **extra)
                  for _, extra in variants]
        cells.append(Cell("bp", tb_model, tb_data, seed, profile).with_overrides(**tb_shared))
        cells.append(Cell("mgrit", tb_model, tb_data, seed, profile).with_overrides(**tb_shared, **TORCHBRAID_MGRIT))
    return cells


# -- reading runs back ----------------------------------------------------------------------------

def solve_label(row: pd.Series) -> str:
    """How the run computes its gradient: the method, or MGRIT's iteration rule and options."""
    if row["method"] != "mgrit":
        return row["method"]
    tol = float(hparam(row, "tol"))
    label = (f"mgrit tol {tol:g}" if tol > 0 else
             f"mgrit {float(hparam(row, 'fwd_iters')):g}+{float(hparam(row, 'bwd_iters')):g} it")
    options = [name for name, key in (("skip", "skip_downcycle"), ("warm", "warm_start"))
               if hparam(row, key, "False") == "True"]
    return label + (f", {'+'.join(options)}" if options else "")


def processes(row: pd.Series) -> int:
    return int(float(hparam(row, "workers", 1)))


def variant(row: pd.Series) -> str:
    label, n = solve_label(row), processes(row)
    return label if n == 1 else f"{label}, {n} proc"


def levels(row: pd.Series) -> int:
    """MGRIT levels of the run's ODE run (odenet:<depth>...): what the solver builds."""
    depth = int(str(row["model"]).split(":")[1].split("-")[0])
    return len(coarsen(list(range(depth + 1)), int(float(hparam(row, "cfactor", 4))),
                       int(float(hparam(row, "max_levels", 3)))))


PER_EPOCH = [TEST_ACC.key, TRAIN_TIME.key, TRAIN_LOSS.key, FWD_RESIDUAL.key, ADJ_RESIDUAL.key, FWD_ITERS.key,
             ADJ_ITERS.key]


def labelled_runs(ctx) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Finished runs with `variant`, `solve`, `processes` and `setting` columns, and their
    per-epoch history. Training time is end to end; the convergence probe runs off the clock."""
    runs = ctx.finished().copy()
    if runs.empty:
        return runs, pd.DataFrame()
    runs = with_variants(runs, variant, ORDER)
    runs["solve"], runs["processes"] = runs.apply(solve_label, axis=1), runs.apply(processes, axis=1)
    runs["setting"] = runs.model.map(lambda m: "torchbraid" if str(m).endswith("-tb") else "one-shot")
    runs["epoch_s"] = pd.to_numeric(runs["m.train_time"], errors="coerce") / pd.to_numeric(
        runs["p.train.epochs"], errors="coerce")
    probe_keys = [c[2:] for c in PROBE_RES0.columns(runs.columns) + PROBE_REL.columns(runs.columns)]
    speed_keys = [c[2:] for c in SPEEDUP_P.columns(runs.columns)]
    hist = ctx.history(PER_EPOCH + probe_keys + speed_keys, runs)
    hist = hist.merge(runs[["run_id", "variant", "processes"]], on="run_id", how="left")
    per_epoch = hist.groupby("run_id")["step"].max() + 1
    runs["steps_per_epoch"] = pd.to_numeric(runs["m.steps"], errors="coerce") / runs["run_id"].map(per_epoch)
    return runs, hist


# -- tables ---------------------------------------------------------------------------------------

def _mean_of(hist: pd.DataFrame, key: str) -> pd.Series:
    return hist[hist.key == key].groupby("run_id")["value"].mean()


CLAIM_WORDS = {"reproduced": "similar", "not reproduced": "not similar", "undecided": "undecided"}
CLAIM_COL = f"one-shot claim (similar: paired 95% CI of Δ above −{SIMILAR_POINTS:g} pt)"
PAIRED_COL = "Δ vs bp, paired by seed (pts)"


def _claim(row: pd.Series, runs: pd.DataFrame) -> tuple[str, str]:
    """The one-shot claim for a table row (see the module docstring's rules): (the paired Δ with
    its CI, the claim's word from CLAIM_WORDS or why the row is no test)."""
    if not str(row["variant"]).startswith("mgrit") or "tol" in str(row["variant"]):
        return "–", "–"
    sub = runs[(runs.variant == row["variant"]) & (runs.model == row["model"])]
    lv = sub.apply(levels, axis=1).min() if len(sub) else 0
    depth = int(str(row["model"]).split(":")[1].split("-")[0])
    if lv < 3 or depth < 16:
        return "–", f"not a test ({lv} levels, depth {depth}: the forward is nearly exact)"
    base = runs[(runs.variant == "bp") & (runs.model == row["model"])]
    diff, half, kind = paired_diff_ci(accuracy_by_seed(sub), accuracy_by_seed(base))
    if math.isnan(diff):
        return "–", "–"
    paired = f"{fmt_diff(diff, half)} ({kind})" if not math.isnan(half) else f"{diff:+.2f} (one seed)"
    return paired, CLAIM_WORDS[margin_verdict(diff, half, SIMILAR_POINTS)]


def comparison_table(runs: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    table = compare_to_bp(runs, hist, ["dataset", "model"], method_col="variant")
    if table.empty:
        return table
    runs = runs.copy()
    columns = {FWD_ITERS.key: "fwd it/step", ADJ_ITERS.key: "adj it/step",
               FWD_RESIDUAL.key: "fwd ‖r‖ (last it)", ADJ_RESIDUAL.key: "adj ‖r‖ (last it)"}
    for key in columns:
        runs[key] = runs.run_id.map(_mean_of(hist, key))
    runs["modelled"] = pd.to_numeric(runs.get("m." + SPEEDUP.key), errors="coerce")
    runs["P"] = pd.to_numeric(runs.get("m." + WORKERS.key), errors="coerce")
    runs["levels"] = [levels(r) if r.method == "mgrit" else math.nan for _, r in runs.iterrows()]
    agg = runs.groupby(["dataset", "model", "variant"])[[*columns, "modelled", "P", "levels"]].mean().reset_index()
    agg = agg.rename(columns=columns)
    for col in ("fwd ‖r‖ (last it)", "adj ‖r‖ (last it)"):
        agg[col] = agg[col].map(lambda v: "–" if math.isnan(v) else f"{v:.2e}")
    for col in ("fwd it/step", "adj it/step"):
        agg[col] = agg[col].map(lambda v: "–" if math.isnan(v) else f"{v:.1f}")
    agg["levels"] = agg["levels"].map(lambda v: "–" if math.isnan(v) else f"{v:.0f}")
    agg["modelled speedup (P = N/c)"] = [
        "–" if math.isnan(s) else f"{s:.2f}× (P={p:g})" for s, p in zip(agg.pop("modelled"), agg.pop("P"))]
    table = table.merge(agg, on=["dataset", "model", "variant"], how="left")
    table["seeds"] = table["seeds"].astype(int).astype(str)
    table[PAIRED_COL], table[CLAIM_COL] = zip(*(_claim(row, runs) for _, row in table.iterrows()))
    return table.fillna("–")


def torchbraid_table(runs: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """TorchBraid's MNIST example: its published accuracy beside ours (mgrit and bp)."""
    tb = runs[runs.setting == "torchbraid"]
    table = compare_to_bp(tb, hist, ["dataset", "model"], method_col="variant")
    if table.empty:
        return table
    table.insert(3, "published (TorchBraid notebook) %", f"{TORCHBRAID_PUBLISHED:.1f} (89–90 over epochs 1–3)")
    keep = ["dataset", "model", "variant", "published (TorchBraid notebook) %", "seeds", "test acc %",
            "Δ vs bp (pts)", "s/epoch"]
    table = table[[c for c in keep if c in table]].copy()

    def versus(text: str) -> str:
        try:
            return f"{float(str(text).split(' ')[0]) - TORCHBRAID_PUBLISHED:+.1f}"
        except ValueError:
            return "–"

    table["ours − published (pts)"] = table["test acc %"].map(versus)
    return table


def add_verdicts(ctx, table: pd.DataFrame, tb_table: pd.DataFrame, runs: pd.DataFrame) -> None:
    """results/verdicts.md rows: one-shot accuracy (only where the row is a test) and TorchBraid's
    MNIST example figure."""
    outcome_of = {word: outcome for outcome, word in CLAIM_WORDS.items()}
    for _, row in table.iterrows():
        outcome = outcome_of.get(row.get(CLAIM_COL))
        if outcome is None:  # not a test of the claim
            continue
        ctx.add_verdict(f"one-shot MGRIT ({row.variant}) trains to an accuracy similar to serial BP",
                        "Günther et al. 2020 (arXiv 1812.04352), abstract", f"{row.model} on {row.dataset}, "
                        f"{row.seeds} seed(s), {row.levels} levels", f"{row['test acc %']}% (Δ {row[PAIRED_COL]})",
                        f"95% CI of Δ (paired by seed) above −{SIMILAR_POINTS:g} pt; undecided when it straddles "
                        f"−{SIMILAR_POINTS:g}", outcome,
                        {"reproduced": "",
                         "undecided": f"Δ {row[PAIRED_COL]} straddles −{SIMILAR_POINTS:g} pt; more seeds would "
                                      "narrow it"}.get(outcome, "the inexact forward/adjoint of the one-shot solve "
                                                                "costs accuracy here"),
                        Evidence(runs[runs.variant.isin([row.variant, "bp"]) & (runs.model == row.model)],
                                 Setting("untuned", "the suite's ODE network, levels and coarsening; BP's lr "
                                                    "for both, no search")))
    for _, row in tb_table.iterrows():
        gap = row.get("ours − published (pts)", "–")
        if gap in ("–", None) or not str(row.variant).startswith("mgrit"):
            continue
        mean, half, _ = mean_ci(accuracy_by_seed(runs[(runs.variant == row.variant) & (runs.model == row.model)]))
        outcome = tolerance_verdict(TORCHBRAID_PUBLISHED, mean, half, TORCHBRAID_TOLERANCE)
        ctx.add_verdict("TorchBraid's MNIST example reaches 89–90% test accuracy in 3 epochs",
                        "Multilevel-NN/torchbraid examples/mnist/mnist_notebook_simple.ipynb @ 2be4618",
                        f"{row.model}, TorchBraid's setting ({row.seeds} seed(s)); test images from MNIST's test set",
                        f"{row['test acc %']}% ({gap} pts)",
                        f"within {TORCHBRAID_TOLERANCE:g} pts of 90% with a 95% CI no wider than that",
                        outcome, {"reproduced": "",
                                  "undecided": f"the 95% CI over {row.seeds} seeds (±{half:.2f}) is wider than the "
                                               f"±{TORCHBRAID_TOLERANCE:g} pt tolerance: 2500 training and 500 "
                                               "held-out images make single runs noisy; more seeds would decide"}.get(
                            outcome, "one published run on 500 images (±1 image = 0.2 pts); ours differs in the "
                                     "held-out images, the subset, per-epoch reshuffling and seeds, and BP at the "
                                     "same setting is equally far (see the table)"),
                        Evidence(runs[(runs.variant == row.variant) & (runs.model == row.model)],
                                 Setting("published", "TorchBraid's MNIST notebook")))


def settings_table(profile: str) -> str:
    """The report's opening table: every setting of the TorchBraid row and of the one-shot grid,
    published value, value used, source; [R] marks a reconstruction or a deliberate difference."""
    model, _, shared = SETTINGS[profile]
    tb = "examples/mnist/mnist_script.py, network_architecture.py (Multilevel-NN/torchbraid)"
    notebook = "examples/mnist/mnist_notebook_simple.ipynb @ 2be4618 (Multilevel-NN/torchbraid)"
    rows = [
        ("TorchBraid row: network", "OpenFlatLayer (image repeated over 3 channels), 32 steps "
         "x + h·ReLU(conv3×3(ReLU(conv3×3 x))), h = 1/32, CloseLayer (flatten, 32, ReLU, 10)",
         "odenet:32-3-tb, the same", tb),
        ("TorchBraid row: data", "5% of MNIST: training images 0–2499; held-out images 2500–2999 of the "
         "training set", "2500 training images (a fixed random subset); 500 MNIST test images [R]", tb),
        ("TorchBraid row: batches", "50, in file order (no shuffling)", "50, reshuffled every epoch [R]", tb),
        ("TorchBraid row: optimiser", "SGD lr 0.01, momentum 0.9, no weight decay, constant rate, 3 epochs",
         "the same", tb),
        ("TorchBraid row: MGRIT", "3 levels, c = 4, 2 forward + 1 adjoint iterations, F-relaxation on the fine "
         "level, FCF on coarse ones, down-cycle skipped, warm restarts", "the same", tb),
        ("TorchBraid row: MGRIT initial guess", "zeros", "u_0 at every point [R]; with the down-cycle skipped "
         "the guess is overwritten, so it does not matter", "src/torchbraid/torchbraid_app.pyx"),
        ("TorchBraid row: processes", "4 MPI ranks", "1 process (the same mathematics)", notebook),
        ("TorchBraid row: seed / init", "torch.manual_seed(1), PyTorch's default init", "seeds 0…n−1, PyTorch's "
         "default init [R]", notebook),
        ("TorchBraid row: accuracy", "89%, 90%, 90% after epochs 1–3 (443, 452, 450 of 500)", "measured below",
         notebook),
        ("one-shot grid: network", "[NF] (paper: ResNets in ODE form; N, width not available)",
         f"{model} (TorchBraid's step layer, trained 3×3 stem at half resolution, CloseLayer) [R]",
         "arXiv 1812.04352 abstract"),
        ("one-shot grid: optimiser", "full-batch L-BFGS with line search (authors' code) [NF for the paper]",
         f"SGD lr {shared.get('lr', 0.1)}, momentum 0.9, step schedule, batch {shared.get('batch_size', 'profile')} "
         "[R]", "steffi7574/LayerParallelLearning main.cpp"),
        ("one-shot grid: MGRIT", "[NF]; TorchBraid's example: 3 levels, c = 4, 2 + 1 iterations",
         "c = 4, 3 levels, 1+1 and 2+1 iterations, tol 1e-6, and 2+1 with TorchBraid's options", tb),
    ]
    frame = pd.DataFrame(rows, columns=["setting", "published", "used", "source"])
    return "## Settings\n\n" + frame.to_markdown(index=False) + "\n"


NOTES = (
    "s/epoch = the whole run's training seconds over its epochs (train_step and end_epoch; the convergence "
    "probe runs in diagnostics, off the clock), in one process, or with the layer chunks in P processes for "
    "the rows marked 'P proc' (same mathematics, same weights bit for bit). MGRIT does ≈ 3.5× the layer "
    "evaluations of BP, so on 1–2 cores it is slower than BP by design; its speed comes from many workers. "
    "'modelled speedup' = critical path of layer evaluations of the ODE run's forward + backward with "
    "P = N/c workers vs layer-serial BP (communication, stem and head not modelled; see docs/mgrit.md). "
    "fwd/adj ‖r‖ = absolute residual norm after the step's last MGRIT iteration, mean over the steps of all "
    "epochs; it/step = iterations per solve (fixed for one-shot, until ‖r‖ ≤ tol·‖r_ref‖ otherwise). "
    "'skip+warm' = TorchBraid's options: the first V-cycle skips the down-cycle, and each solve starts from "
    "the previous step's states (with the skip, the start is overwritten, so only the skip matters). "
    "The paper's numbers are not available [NF]: the one-shot verdicts test its abstract's words. ")


# -- figures --------------------------------------------------------------------------------------

def training_figure(ctx, runs: pd.DataFrame, hist: pd.DataFrame) -> None:
    sub = hist[hist.key.isin(["train_loss", "test_acc"])].copy()
    if sub.empty:
        return
    sub["iteration"] = (sub.step + 1) * sub.run_id.map(runs.set_index("run_id")["steps_per_epoch"])
    order = [v for v in ORDER if v in set(sub.variant)] + sorted(set(sub.variant) - set(ORDER))
    sub.loc[sub.key == "test_acc", "value"] = percent(sub.loc[sub.key == "test_acc", "value"])
    fig, axes = panels(2, panel=(4.2, 3.2), legend_width=2.0)
    for ax, key, label in zip(axes, ("train_loss", "test_acc"), ("training loss (mean over the epoch)",
                                                                 "test accuracy (%, end of epoch)")):
        data = sub[sub.key == key]
        sns.lineplot(data, x="iteration", y="value", hue="variant", style="variant", hue_order=order,
                     style_order=order, markers=True, dashes=True, errorbar=("ci", 95), seed=0, ax=ax,
                     palette=[PALETTE.get(v, "gray") for v in order])
        ax.set(xlabel="optimisation iteration (end of each epoch)", ylabel=label,
               title=", ".join(sorted(data.model.unique())))
        if key == "train_loss":
            ax.set_yscale("log")
        epoch_axis(ax, "")
    one_legend(fig, order=order)
    ctx.save_figure(fig, "training", "measured",
                    f"Serial BP vs one-shot MGRIT: loss and accuracy vs iteration (per-epoch points; profile "
                    f"{ctx.profile}, mean and 95% bootstrap CI over {runs.seed.nunique()} seeds)",
                    reproduces="Günther et al. 2020, training with inexact (one-shot) gradients [NF: figure "
                               "not available; reconstructed on TorchBraid's MNIST network]")


def residual_figure(ctx, hist: pd.DataFrame) -> None:
    sub = hist[hist.key.map(PROBE_REL.matches)].copy()
    if sub.empty:
        return
    parts = sub.key.map(PROBE_REL.values)
    sub["solve"] = parts.map(lambda v: "forward (states)" if v["solve"] == "fwd" else "adjoint (gradients)")
    sub["iteration"] = parts.map(lambda v: int(v["k"]))
    # the first and the last epoch, with the residual of the initial guess (iteration 0) = 1
    first, last = sub.step.min(), sub.step.max()
    sub = sub[sub.step.isin([first, last])]
    zero = sub.drop_duplicates(["run_id", "step", "solve"]).assign(iteration=0, value=1.0)
    sub = pd.concat([zero, sub], ignore_index=True)
    sub["epoch"] = sub.step.map(lambda s: f"after epoch {s + 1}")
    order = [v for v in ORDER if v in set(sub.variant)]
    fig, axes = panels(2, panel=(4.2, 3.2), legend_width=2.0, sharey=True)
    for ax, solve in zip(axes, ("forward (states)", "adjoint (gradients)")):
        data = sub[sub.solve == solve]
        sns.lineplot(data, x="iteration", y="value", hue="variant", style="epoch", hue_order=order, markers=True,
                     errorbar=None, ax=ax, palette=[PALETTE.get(v, "gray") for v in order])
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=f"{solve}, {', '.join(sorted(data.model.unique()))}", xlabel="MGRIT iteration",
               ylabel="relative residual ‖r_k‖ / ‖r_0‖")
    one_legend(fig)
    ctx.save_figure(fig, "residual", "measured",
                    "MGRIT residual vs iteration (probe on a fixed batch at each run's weights; variants overlap where equal)",
                    reproduces="Günther et al. 2020, MGRIT convergence for forward and adjoint [NF: figure not "
                               "available; reconstructed]")


def scaling_figure(ctx, runs: pd.DataFrame, hist: pd.DataFrame) -> None:
    sub = hist[hist.key.map(SPEEDUP_P.matches) & (hist.processes == 1)].copy()
    if sub.empty:  # (the P-process runs model the same critical path as their 1-process twins)
        return
    sub["workers"] = sub.key.map(lambda k: int(SPEEDUP_P.values(k)["p"]))
    sub = sub.groupby(["variant", "model", "workers"], as_index=False)["value"].mean()
    sub["relative time"] = 1.0 / sub["value"]
    order = [v for v in ORDER if v in set(sub.variant)]
    fig, axes = panels(2, panel=(4.2, 3.2), legend_width=2.0, gridspec_kw={"width_ratios": [1.4, 1]})
    ax = axes[0]
    sns.lineplot(sub, x="workers", y="relative time", hue="variant", style="variant", hue_order=order,
                 style_order=order, markers=True, ax=ax, palette=[PALETTE.get(v, "gray") for v in order])
    ax.axhline(1.0, color=PALETTE["bp"], lw=1.2, ls="--", label="bp (layer-serial, 1 process)")
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="workers P (layer chunks)", ylabel="run time / serial BP's (modelled)",
           title="MODELLED: critical path of the ODE run")
    ax = axes[1]
    runs = runs[runs.setting == "one-shot"]
    bp_time = runs.loc[runs.method == "bp", "epoch_s"].mean()
    measured = runs[runs.method != "bp"].groupby(["solve", "processes"], as_index=False)["epoch_s"].mean()
    solves = [v for v in ORDER if v in set(measured.solve)]
    sns.lineplot(measured, x="processes", y="epoch_s", hue="solve", style="solve", hue_order=solves,
                 style_order=solves, markers=True, ax=ax, palette=[PALETTE.get(v, "gray") for v in solves])
    if not math.isnan(bp_time):
        ax.axhline(bp_time, color=PALETTE["bp"], lw=1.2, ls="--", label="bp (layer-serial, 1 process)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set(xlabel="processes P on 2 cores (P = 1: 2 threads; P = 2: 1 thread each)", ylabel="s / epoch (measured)",
           title="MEASURED: P processes, this machine")
    one_legend(fig, order=[*order, "bp (layer-serial, 1 process)"])
    ctx.save_figure(fig, "scaling", "modelled",
                    "Run time vs workers (left modelled for any P; right measured s/epoch with P processes here)",
                    reproduces="Günther et al. 2020, strong scaling [NF: figure not available; modelled, and "
                               "measured for P ≤ 2 on a 2-core CPU]")


def report(ctx) -> None:
    runs, hist = labelled_runs(ctx)
    settings = settings_table(ctx.profile if ctx.profile in SETTINGS else "quick")
    if runs.empty:
        _opening(ctx.write_table(pd.DataFrame(), notes=NOTES), settings)
        return
    one_shot = runs[runs.setting == "one-shot"]
    tb_text = torchbraid_table(runs, hist)
    tb_notes = ("\n\n## TorchBraid's MNIST example at its own setting\n\n"
                + (tb_text.to_markdown(index=False) if len(tb_text) else "_no finished runs_")
                + "\n\nPublished: the digits-MNIST run of TorchBraid's `mnist_notebook_simple.ipynb` (commit "
                "2be4618, 4 MPI ranks, layer-parallel) printed 89%, 90%, 90% test accuracy after epochs 1–3 on its "
                "500 held-out images; ±1 image is 0.2 points, and one run's spread over seeds is a few points at "
                "this size: the verdict asks the mean to be within 2 points of 90% and its 95% CI over seeds to fit "
                "inside those 2 points.")
    table = comparison_table(one_shot, hist)
    path = ctx.write_table(table, notes=NOTES + TARGET_NOTE + tb_notes)
    add_verdicts(ctx, table, tb_text, runs)
    _opening(path, settings)
    training_figure(ctx, one_shot, hist[hist.run_id.isin(one_shot.run_id)])
    residual_figure(ctx, hist[hist.run_id.isin(one_shot.run_id)])
    scaling_figure(ctx, runs, hist[hist.run_id.isin(one_shot.run_id)])


def _opening(md_path, settings: str) -> None:
    """Put the settings table first, right after the report's title block."""
    text = md_path.read_text()
    title, _, body = text.partition("\n\n")
    source, _, rest = body.partition("\n\n")
    write_text(md_path, f"{title}\n\n{source}\n\n{settings}\n## Results\n\n{rest}")


EXPERIMENT = Experiment(
    name="mgrit",
    title="Layer-parallel MGRIT: serial BP vs one-shot and converged MGRIT; TorchBraid's MNIST example",
    source="Günther et al. 2020 (SIMODS 2(1), arXiv 1812.04352): training with inexact one-shot gradients, "
           "MGRIT convergence, scaling [figures NF, reconstructed]; TorchBraid examples/mnist (its notebook's "
           "89–90%)",
    grid=grid, report=report,
    profiles=("smoke", "quick", *(("verify",) if "verify" in PROFILES else ()), "paper"))
