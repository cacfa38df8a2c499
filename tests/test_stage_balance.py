"""Choosing the stage cut (`balance=time`, `stage_blocks`): the local search over cuts against
hand-worked cases, the step timer leaving the model untouched, and the explicit cut's checks."""

from __future__ import annotations

import pytest
import torch

from suite.config import TrainConfig
from suite.errors import UsageError
from suite.methods import METHODS
from suite.methods.layer_parallel.balance import (
    StageStepTimer,
    measure_costs,
    neighbours,
    refine_bounds,
    time_balanced_bounds,
)
from suite.methods.layer_parallel.stages import bounds_from_blocks
from suite.models import build_model
from tests.conftest import make_context, random_bundle


def fake_timer(block_costs, calls):
    """Stage seconds = the sum of its blocks' costs; `calls` records each timed cut."""
    def time_stages(bounds):
        calls.append(bounds)
        return [float(sum(block_costs[a:b])) for a, b in bounds]
    return time_stages


def test_neighbours_move_one_boundary_by_one_block_and_never_empty_a_stage():
    assert neighbours(((0, 4), (4, 9))) == [((0, 3), (3, 9)), ((0, 5), (5, 9))]
    assert neighbours(((0, 1), (1, 2), (2, 4))) == [((0, 1), (1, 3), (3, 4))]


def test_refine_walks_to_the_cut_whose_slowest_stage_is_fastest():
    # blocks 5,5,5,1,...: cutting after k blocks gives max(5k, 21 − 5k) for k ≤ 3 → best k = 2
    # (10 | 11); from k = 5 (17 | 4) the search moves 5 → 4 → 3 → 2 and stops
    costs, calls = [5, 5, 5, 1, 1, 1, 1, 1, 1], []
    bounds, seconds = refine_bounds(((0, 5), (5, 9)), fake_timer(costs, calls), rounds=2)
    assert bounds == ((0, 2), (2, 9)) and seconds == [10.0, 11.0]
    assert len(calls) == 4 * 3 * 3  # four neighbourhoods of 3 cuts, each timed 1 + 2 rounds
    # three stages, blocks 3,1,1,1,1,1: from equal counts (4 | 2 | 2) to 1|3|2 blocks (3 | 3 | 2);
    # its neighbours tie (1|2|3: 3 | 2 | 3) or lose, and a tie keeps the current cut
    bounds, _ = refine_bounds(((0, 2), (2, 4), (4, 6)), fake_timer([3, 1, 1, 1, 1, 1], []), rounds=1)
    assert bounds == ((0, 1), (1, 4), (4, 6))


def test_refine_discards_each_candidates_warm_up_round():
    """The first timing of a cut (kernel set-up, cold caches) must not decide: here it is 100× slow
    for the best cut, and with one counted round the best cut still wins."""
    costs, seen = [5, 5, 5, 1, 1, 1, 1, 1, 1], set()
    plain = fake_timer(costs, [])

    def cold_first(bounds):
        seconds = plain(bounds)
        if bounds not in seen:
            seen.add(bounds)
            return [100 * s for s in seconds]
        return seconds
    bounds, _ = refine_bounds(((0, 3), (3, 9)), cold_first, rounds=1)
    assert bounds == ((0, 2), (2, 9))


def test_step_timer_times_copies_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 16, 16), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hp = METHODS["augmented-lagrangian"].HParams()
    timer = StageStepTimer(model, (3, 16, 16), 4, hp, multipliers=True)
    seconds = timer(((0, 3), (3, 9)))
    assert len(seconds) == 2 and min(seconds) > 0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    costs = measure_costs(model, (3, 16, 16), batch=4, repeats=1)
    assert len(costs) == 11 and min(costs) > 0 and all(p.grad is None for p in model.parameters())
    bounds = time_balanced_bounds(model, 2, (3, 16, 16), 4, hp, multipliers=True)
    assert len(bounds) == 2 and bounds[0][0] == 0 and bounds[-1][1] == 9 and bounds[0][1] == bounds[1][0]


def test_explicit_cut_is_used_logged_and_checked_before_any_compute():
    assert bounds_from_blocks((4, 5), 9) == [(0, 4), (4, 9)]
    model = build_model("odenet:6-4", (1, 28, 28), 10)
    penalty = METHODS["penalty"]
    for blocks, message in (((4, 3), "summing to its 6 blocks"), ((6, 0), "at least 1 block"),
                            ((1, 2, 3), "names 3 stages but stages=2")):
        with pytest.raises(UsageError, match=message):
            penalty(penalty.HParams(stage_blocks=blocks)).reject_settings(model, TrainConfig(), torch.device("cpu"))
    data = random_bundle(n_train=32, batch_size=16)
    method = penalty(penalty.HParams(stage_blocks=(5, 1), serial_share=0.0))
    method.setup(model, make_context(data, 1))
    assert [len(s) for s in method.stages] == [6, 2]  # stem + 5 blocks | 1 block + head
    for b in data.train_batches(0, 0):
        method.train_step(b)
    metrics = method.end_epoch(0)
    method.close()
    assert metrics["lp/stage1_blocks"] == 5 and metrics["lp/stage2_blocks"] == 1
