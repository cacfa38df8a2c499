"""Figures follow one set of rules (suite/report/figures.py, suite/report/palette.py): one
legend per figure outside the data, every method in its palette colour and no two alike, no text
off the canvas, at most 12 in wide; accuracy intervals stay within [0, 100]."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report import palette
from suite.report.figures import figure_problems, legend_colours


def test_every_method_has_its_own_colour_and_bp_is_black():
    from suite.methods import METHODS
    got = {m: palette.color(m) for m in METHODS}
    assert got["bp"] == "#000000"
    assert len(set(got.values())) == len(got), got
    assert all(palette.family(m) is not None for m in METHODS)
    # families share a hue family: the sign-symmetric methods are greens, the DFA ones oranges
    assert {palette.family(m) for m in ("usf", "brsf", "frsf")} == {"sign symmetry"}
    assert palette.family("penalty") == palette.family("mgrit") == "layer-parallel"


def test_labels_map_to_their_method_and_unknown_names_get_a_fixed_new_colour():
    assert palette.method_of("dfa [unit]") == "dfa" and palette.method_of("mgrit 2+1 it") == "mgrit"
    assert palette.method_of("hybrid-dfa (modulewise, 2 modules)") == "hybrid-dfa"
    assert palette.method_of("bp-sparsity") == "bp-sparsity" and palette.method_of("bpx") is None
    unknown = palette.color("someone-elses-method")
    assert unknown == palette.color("someone-elses-method")  # deterministic
    assert unknown not in {c for _, c in palette.METHOD_COLORS.values()}


def test_a_figures_labels_are_all_distinct_and_keep_the_methods_colours():
    labels = ["bp", "fa", "dfa [layer]", "dfa [unit]", "dfa", "hybrid-dfa (conv-bp+fc-dfa)",
              "hybrid-dfa (conv-dfa+fc-bp)", "new-a", "new-b", "bp · adam", "bp · sgd"]
    got = palette.colors(labels)
    assert list(got) == labels and len(set(got.values())) == len(labels)
    assert got["bp"] == palette.color("bp") and got["dfa"] == palette.color("dfa")
    # local's schedules as shades of local's colour, with BP kept black
    schedules = palette.colors(["bp", "static", "linear", "dynamic"], lambda v: "bp" if v == "bp" else "local")
    assert schedules["bp"] == "#000000" and schedules["static"] == palette.color("local")
    assert len(set(schedules.values())) == 4


def test_bounded_interval_stays_within_the_scale():
    from suite.report.stats import bounded_ci, fmt_bounded, mean_ci
    collapsed = [99.01, 98.96, 11.35]  # one seed of three at chance
    mean, half, _ = mean_ci(collapsed)
    assert mean + half > 100 and mean - half < 0  # the t interval leaves the scale
    mean, low, high, n = bounded_ci(collapsed)
    assert n == 3 and 0 <= low <= mean <= high <= 100 and low >= min(collapsed) and high <= max(collapsed)
    assert fmt_bounded(collapsed).startswith(f"{np.mean(collapsed):.2f}") and "±" not in fmt_bounded(collapsed)
    assert fmt_bounded([90.0, 91.0, 92.0]).startswith("91.00 ± ")  # a t interval inside the scale stays
    assert math.isnan(bounded_ci([])[0]) and fmt_bounded([50.0]) == "50.00"


# -- figures rendered from small stores and frames -------------------------------------------------



def _check(fig, methods=()):
    problems = figure_problems(fig)
    assert not problems, problems
    colours = legend_colours(fig)
    for method in methods:
        assert colours[method] == palette.color(method), (method, colours)


def test_summary_figure_follows_the_rules(tracker, tmp_path, monkeypatch, saved):
    from test_report import _log_fake_run

    from suite.experiments import EXPERIMENTS, summary
    from suite.report.build import build_report
    monkeypatch.setitem(summary.GRIDS, "smoke", (["mlp", "cnn"], ["mnist"]))
    exp = EXPERIMENTS["summary"]
    for cell in exp.cells("smoke", seeds=3):
        accs = [0.1, 0.1, 0.11] if cell.method == "frsf" and cell.seed == 2 else [0.5, 0.8, 0.85 + 0.01 * cell.seed]
        _log_fake_run(tracker, cell, accs)
    build_report([exp], "smoke", tracker, seeds=3, results_dir=tmp_path / "r", figures_dir=tmp_path / "f")
    assert len(saved) == 1
    fig = saved[0]
    _check(fig, methods=("bp", "fa", "dfa", "usf", "brsf", "frsf", "penalty"))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test accuracy (%)"
    assert all(float(t).is_integer() for t in ax.get_xticks())  # integer epochs
    assert max(max(line.get_ydata(), default=0) for line in ax.get_lines()) > 1  # in %, not a fraction


def _hist(variants, keys=("test_acc",), seeds=3, epochs=3, panel_col="dataset"):
    rng = np.random.default_rng(0)
    rows = []
    for v in variants:
        for seed in range(seeds):
            for step in range(epochs):
                for key in keys:
                    rows.append({"run_id": f"{v}-{seed}", "key": key, "step": step, "seed": seed,
                                 "value": float(np.clip(0.5 + 0.1 * step + 0.05 * rng.standard_normal(), 0, 1)),
                                 "variant": v, "method": v.split(" ")[0], "dataset": "mnist", "model": "cnn",
                                 "panel": f"{v} · mnist"})
    return pd.DataFrame(rows)


def _ctx(tmp_path, name="dfa-cnn"):
    from suite.experiments import EXPERIMENTS
    from suite.report.context import ReportContext
    return ReportContext(EXPERIMENTS[name], "quick", None, pd.DataFrame(), tmp_path / "r", tmp_path / "f")


def test_feedback_figures_follow_the_rules(tmp_path, saved):
    from suite.experiments.feedback_common import accuracy_figure, alignment_figure
    variants = ["bp", "fa", "dfa [block]", "bdfa [block]", "hybrid-dfa (conv-bp+fc-dfa)",
                "hybrid-dfa (conv-dfa+fc-bp)"]
    ctx = _ctx(tmp_path)
    accuracy_figure(ctx, _hist(variants), "dataset", "accuracy", "Test accuracy vs epoch " * 6, "a source")
    align = _hist(variants[1:], keys=("align/0_mean", "align/1_mean"))
    alignment_figure(ctx, align, "alignment", "Gradient alignment", "a source")
    assert len(saved) == 2
    _check(saved[0], methods=("bp", "fa"))
    _check(saved[1])


def test_biotorch_error_figure_follows_the_rules(tmp_path, saved):
    from suite.experiments import biotorch_mnist
    hist = _hist(["bp", "fa", "usf", "brsf", "frsf", "dfa"])
    biotorch_mnist._error_figure(_ctx(tmp_path, "biotorch-mnist"), hist)
    _check(saved[0], methods=("bp", "fa", "usf", "brsf", "frsf", "dfa"))


def test_tuning_sensitivity_figure_follows_the_rules(tmp_path, saved):
    from suite.config import Cell
    from suite.params import LogUniform
    from suite.tuning.report import write_report
    from suite.tuning.study import StudyResult, StudySpec, Trial
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    results = []
    for model in ("mlp", "cnn", "resnet20", "odenet:8-8-fc"):
        for method in ("bp", "fa", "dfa", "usf", "brsf", "frsf", "penalty", "mgrit"):
            spec = StudySpec("summary", Cell(method, model, "mnist", 0, "smoke"), {"lr": LogUniform(1e-4, 1.0)}, 5, 0)
            trials = [Trial(i, {"lr": lr}, 0.0 if lr == 1.0 else 0.5 + 0.1 * i, "diverged" if lr == 1.0 else "finished",
                            f"r{i}") for i, lr in enumerate(lrs)]
            results.append(StudyResult(spec, "complete", trials=trials))
    write_report("summary", "smoke", results, tmp_path / "r", tmp_path / "f")
    assert len(saved) == 1
    fig = saved[0]
    _check(fig, methods=("bp", "fa", "dfa", "usf", "penalty"))
    for ax in fig.axes:  # a diverged trial (lr 1.0) is a mark, never the end of a line
        for line in ax.get_lines():
            assert 1.0 not in set(line.get_xdata())


def _lp_runs():
    rows = []
    for seed in range(3):
        rows.append({"method": "bp", "model": "resnet20", "dataset": "mnist", "seed": seed, "m.test_acc": 0.9,
                     "distributed": False, "ds_stride": 1, "stages": 0, "serial_share": 1.0})
        for share in (0.0, 0.25, 0.5):
            for method in ("penalty", "augmented-lagrangian"):
                rows.append({"method": method, "model": "resnet20", "dataset": "mnist", "seed": seed,
                             "m.test_acc": 0.8 + 0.1 * share - 0.7 * (seed == 2 and share == 0.0),
                             "distributed": False, "ds_stride": 1, "stages": 2, "serial_share": share,
                             "par.comm_mb": 3.0, "par.comm_mb_without_ds": 3.0, "par.modelled_speedup": 1.9,
                             "par.epoch_time": 2.0})
        rows.append({"method": "penalty", "model": "resnet20", "dataset": "mnist", "seed": seed, "m.test_acc": 0.8,
                     "distributed": True, "ds_stride": 1, "stages": 2, "serial_share": 0.0, "par.comm_mb": 3.0,
                     "par.comm_mb_without_ds": 3.0, "par.modelled_speedup": 1.9, "par.epoch_time": 1.4})
    return pd.DataFrame(rows)


def test_layer_parallel_figures_follow_the_rules(tmp_path, saved):
    from suite.experiments import layer_parallel
    ctx, runs = _ctx(tmp_path, "layer-parallel"), _lp_runs()
    layer_parallel._sph_figure(ctx, runs)
    layer_parallel._comm_figure(ctx, runs)
    layer_parallel._speedup_figure(ctx, runs)
    assert len(saved) == 3
    for fig in saved:
        _check(fig)
    assert "no run here has the DS filters on" in " ".join(saved[1]._suptitle.get_text().split())  # says so
    colours = legend_colours(saved[0])
    assert colours["penalty K=2"] == palette.color("penalty")
    assert next(c for label, c in colours.items() if label.startswith("serial bp")) == palette.color("bp")


def test_local_schedule_figures_follow_the_rules(tmp_path, saved):
    from suite.experiments import local_schedules
    variants = ["bp", "linear", "quadratic", "exponential", "dynamic", "dynamic α=0.5 L=10%"]
    hist = _hist(variants, keys=(local_schedules.TRANSITION.key,))
    local_schedules.transition_figure(_ctx(tmp_path, "local-schedules"), hist)
    runs = pd.DataFrame([{"variant": v, "model": "resnet20", "seed": s, "m.test_acc": 0.9 - 0.01 * i,
                          "m.epoch_time": 1.0 - 0.05 * i} for i, v in enumerate(variants) for s in range(3)])
    local_schedules.tradeoff_figure(_ctx(tmp_path, "local-schedules"), runs)
    assert len(saved) == 2
    for fig in saved:
        _check(fig)
    assert legend_colours(saved[1])["bp"] == palette.color("bp")
    assert legend_colours(saved[1])["linear"] != palette.color("bp")


def test_a_difference_interval_stays_within_plus_minus_100_points():
    from suite.report.stats import fmt_diff
    assert fmt_diff(1.0, 0.5) == "+1.00 ± 0.50"
    assert fmt_diff(26.43, 109.11) == "+26.43 [-82.68, +100.00]"  # the t interval clipped to the scale
    text = fmt_diff(26.43, 109.11, per_seed=[0.5, 1.0, 77.8])  # bootstrap over the paired seeds
    low, high = (float(v) for v in text.split("[")[1].rstrip("]").split(","))
    assert 0.5 <= low <= high <= 77.8
    assert fmt_diff(float("nan"), 1.0) == "–" and fmt_diff(2.0, float("nan")) == "+2.00"
