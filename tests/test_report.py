"""Report generation from runs logged by the test itself; statistics against hand calculations."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from suite.config import Cell, resolve
from suite.experiments import EXPERIMENTS
from suite.report.build import build_report, write_index
from suite.report.stats import (
    diff_ci,
    margin_verdict,
    mean_ci,
    paired_diff_ci,
    summarise,
    tolerance_verdict,
    welch_p,
)


def test_confidence_interval_matches_hand_calculation():
    # values 1, 2, 3, 4: mean 2.5, sample sd sqrt(5/3); t(0.975, 3) = 3.182446305284263
    mean, half, n = mean_ci([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2)
    assert math.isnan(mean_ci([7])[1]) and mean_ci([])[2] == 0


def test_difference_interval_matches_hand_calculation():
    # a = 1,2,3 and b = 4,5,6: Δ = −3, each variance of the mean 1/3, Welch dof = 4,
    # t(0.975, 4) = 2.7764451051977987, half-width = t · sqrt(2/3)
    diff, half = diff_ci([1, 2, 3], [4, 5, 6])
    assert diff == -3 and half == pytest.approx(2.7764451051977987 * math.sqrt(2 / 3))
    assert math.isnan(diff_ci([1.0], [4, 5])[1])
    # paired by seed: differences 0.1, 0.2, 0.3 (the seeds' spread cancels): mean 0.2, sd 0.1,
    # t(0.975, 2) = 4.302652729911275
    a, b = pd.Series([80.1, 90.2, 70.3], index=[0, 1, 2]), pd.Series([90.0, 70.0, 80.0], index=[1, 2, 0])
    diff, half, kind = paired_diff_ci(a, b)
    assert kind == "paired" and diff == pytest.approx(0.2) and half == pytest.approx(4.302652729911275 * 0.1 / 3 ** 0.5)
    assert paired_diff_ci(a, b.drop(2))[2] == "Welch"  # seeds differ: unpaired


def test_verdicts_read_the_interval_not_the_point_estimate():
    assert margin_verdict(+0.4, 1.0, 1.0) == "reproduced"  # CI [−0.6, 1.4] above −1
    assert margin_verdict(-5.0, 2.0, 1.0) == "not reproduced"  # CI [−7, −3] below −1
    assert margin_verdict(+0.4, 3.3, 1.0) == "undecided"  # mean above −1, CI reaches −2.9
    assert margin_verdict(0.0, float("nan"), 1.0) == "undecided"  # one seed
    assert tolerance_verdict(90.0, 89.0, 1.5, 2.0) == "reproduced"
    assert tolerance_verdict(90.0, 89.0, 5.0, 2.0) == "undecided"  # published inside a CI wider than ±2
    assert tolerance_verdict(90.0, 80.0, 5.0, 2.0) == "not reproduced"  # CI ends 5 pts short of the band


def test_welch_test_on_constructed_cases():
    assert welch_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert welch_p([0.0, 0.1, 0.2, 0.1], [10.0, 10.1, 10.2, 10.1]) < 1e-6
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


def test_summarise_groups_and_formats():
    frame = pd.DataFrame({"method": ["a", "a", "b"], "acc": [0.5, 0.7, 0.9]})
    table = summarise(frame, ["method"], "acc", scale=100)
    row = table.set_index("method").loc["a"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.6)
    assert row["text"].startswith("60.00 ± ")
    assert table.set_index("method").loc["b", "text"] == "90.00"


def _log_fake_run(tracker, cell: Cell, accs: list[float], status: str = "finished", train_loss: float = 0.5,
                  lr: str | None = None):
    cfg = resolve(cell)
    handle = tracker.claim(cfg.cell_hash, {"method": cell.method, "model": cell.model, "dataset": cell.dataset,
                                           "seed": str(cell.seed), "profile": cell.profile, "overrides": "{}",
                                           "git_commit": "abc", "hardware.cpu_count": "2"}, cell.label)
    handle.log_params({"train.epochs": str(len(accs)), "train.threads": "1"} | ({"hp.lr": lr} if lr else {}))
    per_epoch = 2.0 if cell.method == "bp" else 1.0
    for epoch, acc in enumerate(accs):
        handle.log_metrics({"test_acc": acc, "epoch_time": per_epoch, "train_time": per_epoch * (epoch + 1),
                            "train_loss": train_loss}, step=epoch)
    if status == "diverged":
        handle.log_metrics({"diverged_step": 7.0}, step=len(accs))
    handle.finish(status)


def test_summary_report_from_logged_runs(tracker, tmp_path, monkeypatch):
    from suite.experiments import summary
    monkeypatch.setitem(summary.GRIDS, "smoke", (["mlp"], ["mnist"]))
    exp = EXPERIMENTS["summary"]
    cells = exp.cells("smoke", seeds=2)
    for cell in cells:
        if cell.method == "usf" and cell.seed == 1:  # a seed stuck at the uniform guess: loss ln 10, 11%
            _log_fake_run(tracker, cell, [0.1, 0.11], train_loss=2.30)
            continue
        _log_fake_run(tracker, cell, [0.5, 0.8 + 0.02 * cell.seed], "diverged" if cell.method == "dfa" else "finished")
    contexts = build_report([exp], "smoke", tracker, seeds=2, results_dir=tmp_path / "r", figures_dir=tmp_path / "f")
    write_index(contexts, tmp_path / "r", tmp_path / "f")
    table = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert set(table["method"]) == {c.method for c in cells}
    bp = table[table.method == "bp"].iloc[0]
    assert bp["seeds"] == 2 and bp["test acc %"].startswith("81.00 ± ")
    # BP's final mean is 0.81, target 0.95 × 0.81 = 0.7695, first reached at epoch 1 (train_time 4.0)
    assert float(str(bp["time to target (s)"]).split()[0]) == 4.0
    fa = table[table.method == "fa"].iloc[0]
    assert fa["speedup vs bp (measured)"] == "2.00×" and fa["s/epoch"].startswith("1.00")  # end to end: 4 s / 2 s
    dfa = table[table.method == "dfa"].iloc[0]
    assert dfa["test acc %"] == "diverged (step 7)"  # never an accuracy
    usf = table[table.method == "usf"].iloc[0]
    assert usf["test acc %"].endswith("(1/2 at chance: seed 1)") and "at chance" not in bp["test acc %"]
    notes = (tmp_path / "r" / "summary.md").read_text()  # the collapsed seed's loss path, in the table's notes
    assert "usf on mlp, seed 1: epoch-mean training loss 2.30 → 2.30 (ln 10 = 2.30); it never left" in notes
    assert (tmp_path / "f" / "summary-test-acc.png").stat().st_size > 1000
    index = (tmp_path / "f" / "README.md").read_text()
    assert "summary-test-acc.png" in index and "measured" in index
    assert "abc" in (tmp_path / "r" / "PROVENANCE.md").read_text()


def test_verdicts_on_constructed_cases():
    from suite.report.baselines import verdict
    assert verdict(45.94, 46.5, 2.0) == "within tolerance"
    assert verdict(45.94, 49.0, 2.0) == "outside tolerance"
    assert verdict(float("nan"), 49.0, 2.0) == "no published value"
    assert verdict(0.892, 0.5, None) == "no published value"


def test_published_baselines_are_traceable():
    from suite.report.baselines import load_published
    frame = load_published()
    assert frame["source"].notna().all() and frame["source"].str.len().gt(5).all()
    assert set(frame["verified"].dropna()) <= {"yes", "no"}
    no_value = frame[frame["value"].isna()]
    assert no_value["notes"].notna().all(), "a row without a number must say why"


def test_best_profile_is_the_highest_complete_grid(tracker, mnist_root):
    """`report --profile best` (what `nox -s figures` runs) shows a paper grid only once every one
    of its cells has a complete run; a partial one leaves the complete quick grid in place."""
    from suite.config import Cell
    from suite.harness import run_cell
    from suite.report.build import complete_profile

    tiny = dict(train_subset=64, test_subset=64, epochs=1, batch_size=32)

    class TwoProfiles:
        def cells(self, profile, seeds):
            per = {"quick": [0], "paper": [0, 1]}.get(profile, [])
            return [Cell("bp", "mlp", "mnist", s, profile).with_overrides(**tiny) for s in per]

    exp = TwoProfiles()
    assert complete_profile(tracker, exp, 1) == "quick"  # nothing run: the default
    for cell in exp.cells("quick", 1) + exp.cells("paper", 1)[:1]:
        run_cell(cell, tracker)
    assert complete_profile(tracker, exp, 1) == "quick"  # paper half done
    run_cell(exp.cells("paper", 1)[1], tracker)
    assert complete_profile(tracker, exp, 1) == "paper"


def test_summary_shows_what_tuning_changed(tracker, tmp_path, monkeypatch):
    """With runs at the experiment's settings and at a tuned learning rate in the store, the summary
    writes a table of both accuracies and the per-seed (paired) difference."""
    from suite.experiments import summary
    from suite.tuning.settings import save, selected
    monkeypatch.setitem(summary.GRIDS, "smoke", (["mlp"], ["mnist"]))
    exp = EXPERIMENTS["summary"]
    path = tmp_path / "tuned.json"
    with selected("defaults"):
        default_cells = exp.cells("smoke", seeds=2)
    bp = next(c for c in default_cells if c.method == "bp")
    save(path, [{"experiment": "summary", "profile": "smoke", "method": "bp", "model": "mlp", "dataset": "mnist",
                 "overrides": dict(bp.overrides), "settings": {"lr": "0.05"}, "trials": 2, "sampler": "grid",
                 "sampler_seed": 0, "val_fraction": 0.1, "objective": "final-epoch validation accuracy"}])

    for cell in default_cells:  # defaults: 0.80 and 0.90 by seed
        _log_fake_run(tracker, cell, [0.5, 0.80 + 0.10 * cell.seed], lr=str(getattr(resolve(cell).hparams, "lr", "")) or None)
    with selected("tuned", path):
        for cell in exp.cells("smoke", seeds=2):
            if cell.method == "bp":  # tuned: each seed 1 point better
                _log_fake_run(tracker, cell, [0.5, 0.81 + 0.10 * cell.seed], lr="0.05")
        build_report([exp], "smoke", tracker, seeds=2, results_dir=tmp_path / "r", figures_dir=tmp_path / "f")
    effect = pd.read_csv(tmp_path / "r" / "summary-tuning-effect.csv").set_index("method")
    assert list(effect.index) == ["bp"]  # the only cell whose lr changed
    row = effect.loc["bp"]
    assert row["lr (default → tuned)"] == "0.1 → 0.05"
    # two seeds 10 points apart: the t interval (± 63.5) leaves [0, 100], so the bounded bootstrap one is shown
    assert row["test acc % at default"] == "85.00 [80.00, 90.00]" and row["test acc % tuned"] == "86.00 [81.00, 91.00]"
    assert row["Δ (pts)"] == "+1.00 ± 0.00"  # paired by seed: both seeds gain exactly 1 point


def test_registering_a_method_leaves_the_summary_grid_alone(monkeypatch):
    from suite.experiments.summary import GRID_METHODS
    from suite.methods import BP, METHODS
    before = [c.label for c in EXPERIMENTS["summary"].cells("quick", 1)]
    monkeypatch.setitem(METHODS, "sign-sgd", type("SignSGD", (BP,), {"name": "sign-sgd"}))
    assert [c.label for c in EXPERIMENTS["summary"].cells("quick", 1)] == before
    assert {c.method for c in EXPERIMENTS["summary"].cells("quick", 1)} == set(GRID_METHODS)


def test_a_table_says_how_many_grid_cells_have_no_run(tmp_path):
    from suite.report.context import ReportContext
    runs = pd.DataFrame({"cell_hash": ["a", "b", "b"], "status": ["finished"] * 3})
    ctx = ReportContext(EXPERIMENTS["summary"], "quick", None, runs, tmp_path, tmp_path, grid_cells=5)
    ctx.write_table(pd.DataFrame({"x": [1]}))
    assert "**3 of 5 cells of the grid have no complete run.**" in (tmp_path / "summary.md").read_text()
    complete = ReportContext(EXPERIMENTS["summary"], "quick", None, runs, tmp_path, tmp_path, grid_cells=2)
    assert complete.coverage() == ""
