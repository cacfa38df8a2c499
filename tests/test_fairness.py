"""The rule for a decided verdict (suite.report.fairness): each missing condition turns a would-be
negative into *undecided*, naming the condition; a grid that meets (a)–(c) and fails the claim is
*not reproduced*. And the GEMM-count bound behind local-schedules' condition (b), against hand
counts."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from suite.report.fairness import Bound, Evidence, Setting, decide, provenance_gaps

CLEAN = "a" * 40


def grid(seeds=3, commits=None, methods=("bp", "penalty")) -> pd.DataFrame:
    """A synthetic grid: one cell per method, `seeds` seeds each, every run at `CLEAN` unless
    `commits` gives each run's commit."""
    rows = [{"method": m, "model": "resnet20", "dataset": "mnist", "profile": "verify",
             "overrides": json.dumps({"stages": 2}), "seed": s} for m in methods for s in range(seeds)]
    frame = pd.DataFrame(rows)
    frame["git_commit"] = commits if commits is not None else CLEAN
    return frame


SEARCHED = Setting("searched", "8 TPE trials per method over lr and β; BP 8 over lr; 10% validation split")


def test_a_grid_meeting_every_condition_that_fails_the_claim_is_not_reproduced():
    assert decide("not reproduced", Evidence(grid(), SEARCHED)) == ("not reproduced", [])
    assert decide("not reproduced", Evidence(grid(), Setting("published"))) == ("not reproduced", [])
    passable = Bound(2.0, 1.5, "GEMM count")
    assert decide("not reproduced", Evidence(grid(), SEARCHED, passable)) == ("not reproduced", [])


@pytest.mark.parametrize("evidence,condition,phrase", [
    (Evidence(grid(), Setting("untuned", "β and lr at their defaults")), "(a)", "not searched"),
    (Evidence(grid(), Setting("proxy", "random inputs, untrained weights")), "(a)", "proxy of the published setting"),
    (Evidence(grid(), SEARCHED, Bound(1.10, 1.5, "GEMM count")), "(b)", "cannot reach the claim: bound 1.10×"),
    (Evidence(grid(commits=[CLEAN] * 5 + [CLEAN + "-dirty"]), SEARCHED), "(c)", "1 of 6 runs trained from a dirty"),
    (Evidence(grid(commits=[CLEAN] * 3 + ["b" * 40] * 3), SEARCHED), "(c)", "runs from 2 commits (aaaaaaa 3, bbbbbbb 3)"),
    (Evidence(grid(seeds=2), SEARCHED), "(c)", "2 of 2 cells with fewer than 3 seeds"),
])
def test_each_missing_condition_turns_a_negative_into_undecided(evidence, condition, phrase):
    verdict, missing = decide("not reproduced", evidence)
    assert verdict == "undecided"
    assert len(missing) == 1 and missing[0].startswith(condition) and phrase in missing[0]


def test_a_positive_needs_provenance_but_not_a_search():
    untuned = Setting("untuned", "defaults")
    assert decide("reproduced", Evidence(grid(), untuned)) == ("reproduced", [])
    verdict, missing = decide("reproduced", Evidence(grid(commits=[CLEAN + "-dirty"] * 6), untuned))
    assert verdict == "undecided" and missing == ["(c) 6 of 6 runs trained from a dirty or unknown tree"]


def test_outcomes_that_claim_nothing_pass_unchanged_and_a_decided_one_needs_evidence():
    assert decide("not testable here", None) == ("not testable here", [])
    with pytest.raises(ValueError, match="needs its evidence"):
        decide("not reproduced", None)
    with pytest.raises(ValueError, match="must say what was searched"):
        Setting("searched")
    assert provenance_gaps(grid().iloc[:0]) == ["no runs"]


def test_the_report_context_applies_the_rule_to_every_decided_verdict(tmp_path):
    from types import SimpleNamespace

    from suite.report.context import ReportContext
    ctx = ReportContext(SimpleNamespace(name="x", title="x", source="x"), "verify", None, grid(), tmp_path, tmp_path)
    ctx.add_verdict("c", "s", "setting", "figure", "rule", "not reproduced", "diagnosis",
                    Evidence(grid(), Setting("untuned", "lr at its default")))
    row = ctx.verdicts[0]
    assert row["verdict"] == "undecided" and row["figure says"] == "not reproduced"
    assert "(a) the reconstruction's free settings were not searched" in row["why"] and "diagnosis" in row["why"]
    with pytest.raises(ValueError, match="needs its evidence"):
        ctx.add_verdict("c", "s", "setting", "figure", "rule", "reproduced")


# -- the GEMM-count bound of local-schedules -------------------------------------------------------

def test_layer_macs_match_hand_counts():
    from suite.methods.local.cost import layer_macs
    from suite.models import build_model
    mlp = build_model("mlp:32-16", (1, 28, 28), 10)
    assert layer_macs(mlp, (1, 28, 28)) == [784 * 32, 32 * 16, 16 * 10]
    cnn = build_model("cnn", (1, 28, 28), 10)
    # conv 5×5 'same': 28² outputs × 32 × 25; after pool 3/2 → 13², 64 × 32·25; → 6², 64 × 64·25; FC 64·2²→128
    assert layer_macs(cnn, (1, 28, 28))[:3] == [28 * 28 * 32 * 25, 13 * 13 * 64 * 32 * 25, 6 * 6 * 64 * 64 * 25]


def test_speedup_bound_counts_the_skipped_backward_gemms():
    from suite.methods.local.cost import speedup_bound, step_cost
    macs = [10, 20, 30]
    assert step_cost(macs, 0) == 60 + 60 + 50  # forward, weight grads, input grads of layers 1 and 2
    assert step_cost(macs, 1) == 60 + 50 + 30  # layer 0 local: no weight grad; layer 1 needs no input grad
    assert speedup_bound(macs, [0, 0]) == 1.0
    assert speedup_bound(macs, [0, 1]) == pytest.approx(340 / 310)
    assert speedup_bound(macs, [3]) == pytest.approx(170 / 60)  # all local: the forward alone
