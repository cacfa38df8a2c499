"""The cross-machine comparison pairs runs by cell hash and measures them against the seed spread."""

from __future__ import annotations

import pandas as pd
import pytest

from diagnostics.machine_spread import cell_without_seed, pair_runs, summarise


def _runs(rows):
    return pd.DataFrame(rows, columns=["cell_hash", "cell_label", "seed", "status", "m.test_acc", "m.train_time"])


def test_cell_without_seed_keeps_the_overrides():
    assert cell_without_seed("fa/resnet20/mnist/s2[lr=0.07,train_subset=4000]") == \
        "fa/resnet20/mnist[lr=0.07,train_subset=4000]"
    assert cell_without_seed("bp/mlp/mnist/s10") == "bp/mlp/mnist"


def test_pairs_by_hash_against_the_seed_spread():
    reference = _runs([
        ("a0", "bp/mlp/mnist/s0", "0", "finished", 0.90, 10.0),
        ("a1", "bp/mlp/mnist/s1", "1", "finished", 0.92, 10.0),
        ("a2", "bp/mlp/mnist/s2", "2", "finished", 0.94, 10.0),
        ("b0", "fa/mlp/mnist/s0", "0", "finished", 0.50, 4.0),
        ("c0", "dfa/mlp/mnist/s0", "0", "finished", 0.80, 5.0),
        ("d0", "usf/mlp/mnist/s0", "0", "skipped", None, None),
    ])
    other = _runs([
        ("a0", "bp/mlp/mnist/s0", "0", "finished", 0.90, 20.0),  # identical
        ("a1", "bp/mlp/mnist/s1", "1", "finished", 0.95, 15.0),  # +3 points, seed SD 2 points
        ("b0", "fa/mlp/mnist/s0", "0", "finished", 0.49, 4.0),  # one seed: no SD
        ("c0", "dfa/mlp/mnist/s0", "0", "diverged", 0.10, 1.0),  # status changed
        ("d0", "usf/mlp/mnist/s0", "0", "skipped", None, None),  # nothing to compare
        ("e0", "brsf/mlp/mnist/s0", "0", "finished", 0.70, 3.0),  # not in the reference
    ])
    pairs = pair_runs(reference, other).set_index("cell")
    assert list(pairs.index) == ["bp/mlp/mnist/s0", "bp/mlp/mnist/s1", "dfa/mlp/mnist/s0", "fa/mlp/mnist/s0"]
    assert pairs.loc["bp/mlp/mnist/s0", "delta"] == 0
    assert pairs.loc["bp/mlp/mnist/s1", "delta"] == pytest.approx(3.0)
    assert pairs.loc["bp/mlp/mnist/s1", "seed_sd_ref"] == pytest.approx(2.0)
    assert pairs.loc["bp/mlp/mnist/s1", "time_ratio"] == pytest.approx(1.5)
    assert pd.isna(pairs.loc["dfa/mlp/mnist/s0", "delta"])  # no accuracy difference for a diverged run
    lines = "\n".join(summarise(pairs.reset_index()))
    assert "cells compared: 4 (3 finished on both machines)" in lines
    assert "bitwise-identical test accuracy: 1 of 3" in lines
    assert "more than the reference's seed-to-seed SD: 1 of 2" in lines
    assert "mlp: 1 of 3 identical, |Δ| median 1.00, largest 3.00" in lines
    assert "status changed: 1; dfa/mlp/mnist/s0 finished → diverged" in lines
