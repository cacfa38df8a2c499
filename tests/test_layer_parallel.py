"""`penalty` and `augmented-lagrangian`: the stage split, the auxiliary-variable and multiplier
updates against hand computations, the large-β limit against backprop, the DS filter, and the
2-process distributed run against the single-process run of the same mathematics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError
from suite.methods import METHODS
from suite.methods.layer_parallel.aux_vars import aux_update
from suite.methods.layer_parallel.stage_solver import StageSolver, StageTask
from suite.methods.layer_parallel.stages import (
    BoundaryFilter,
    measure_costs,
    split_stages,
    stage_bounds,
)
from suite.models import build_model
from suite.models.staged import SequentialBlock, StagedModel
from tests.conftest import make_context, random_bundle


def test_stage_bounds_balance_blocks_and_reject_more_stages_than_blocks():
    assert stage_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert stage_bounds(2, 2) == [(0, 1), (1, 2)]
    with pytest.raises(UsageError, match="stages=5 is invalid for a model with 4 blocks"):
        stage_bounds(4, 5)


def test_time_balanced_cut_minimises_the_slowest_stage():
    # stem 3, four blocks of 2, head 0: cutting after block 1 gives stages of 5 and 6 (max 6);
    # the equal-count cut gives 7 and 4
    assert stage_bounds(4, 2, [3, 2, 2, 2, 2, 0]) == [(0, 1), (1, 4)]
    assert stage_bounds(6, 3, [0, 1, 1, 1, 1, 1, 1, 0]) == [(0, 2), (2, 4), (4, 6)]
    assert stage_bounds(5, 3, [0, 1, 1, 1, 5, 1, 0]) == [(0, 3), (3, 4), (4, 5)]
    model = build_model("odenet:4-4", (1, 28, 28), 10)
    costs = measure_costs(model, (1, 28, 28), batch=4, repeats=1)
    assert len(costs) == 6 and min(costs) > 0
    assert all(p.grad is None for p in model.parameters())


def test_split_stages_share_parameters_and_compose_to_the_model():
    model = build_model("odenet:6-4", (1, 28, 28), 10)
    stages = split_stages(model, 3)
    x = torch.randn(2, 1, 28, 28)
    y = x
    for s in stages:
        y = s(y)
    torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    assert {id(p) for s in stages for p in s.parameters()} == {id(p) for p in model.parameters()}


def test_ds_filter_reduces_by_stride_squared_and_restores_piecewise_constant_maps():
    f = BoundaryFilter(2, (3, 14, 14))
    assert f.stored_shape == (3, 7, 7)
    blocky = torch.randn(2, 3, 7, 7).repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(f.restore(f.reduce(blocky)), blocky)
    assert BoundaryFilter(2, (3, 7, 7)).stored_shape == (3, 4, 4)  # ceil mode keeps the edge pixels
    assert BoundaryFilter(2, (10,)).stored_shape == (10,)  # not a feature map: identity


def test_aux_update_matches_a_hand_computation():
    lam, mu = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    reduced, grad = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.1, 0.2]])
    beta, d, a = 4.0, 2, 0.5
    new_lam, new_mu = aux_update(lam, mu, reduced, grad, beta, d, a)
    # λ + a·[(F − λ) + μ/β − (d/β)·g] = [1 + .5·(1 + .125 − .05), 2 + .5·(−2 − .25 − .1)]
    torch.testing.assert_close(new_lam, torch.tensor([[1.5375, 0.825]]))
    # μ + β·(F − λ_new) = [.5 + 4·.4625, −1 + 4·(−.825)]
    torch.testing.assert_close(new_mu, torch.tensor([[2.35, -4.3]]))
    lam_only, none = aux_update(lam, None, reduced, grad, beta, d, a)
    assert none is None
    torch.testing.assert_close(lam_only, torch.tensor([[1.475, 0.95]]))


def two_stage_mlp(seed: int = 0) -> StagedModel:
    torch.manual_seed(seed)
    blocks = [SequentialBlock(nn.Linear(4, 6), nn.Tanh()), SequentialBlock(nn.Linear(6, 3))]
    return StagedModel(nn.Flatten(), blocks, nn.Identity(), name="two-stage-mlp").double()


def stage1_gradient(stage, lam, x, beta, mu=None):
    """∂J_1/∂θ_1 of stage 1's own sub-problem, through the suite's StageSolver."""
    hp = METHODS["penalty"].HParams(momentum=0.0, weight_decay=0.0, lr=1e-9)
    ident = BoundaryFilter(1, (6,))
    solver = StageSolver(copy.deepcopy(stage), 0, 2, hp, 1, 1, None, ident)
    solver.step(StageTask(x, lam, mu, None, beta))
    return torch.cat([p.grad.flatten() for p in solver.module.parameters()])


def solve_aux(stage1, stage2, x, y, beta, multipliers: bool, outer: int = 4000):
    """The exact λ (and μ) sub-problem for fixed θ: iterate the method's own update to its fixed point."""
    with torch.no_grad():
        f1 = stage1(x)
    lam, mu = f1.clone(), torch.zeros_like(f1) if multipliers else None
    for _ in range(outer):
        inp = lam.detach().requires_grad_(True)
        loss = F.cross_entropy(stage2(inp), y)
        (grad,) = torch.autograd.grad(loss, inp)
        lam, mu = aux_update(lam, mu, f1, grad * x.shape[0], beta, f1.shape[1], 0.2)
    return lam, mu


def test_penalty_gradient_approaches_backprop_as_beta_grows():
    """With the λ sub-problem solved exactly, stage 1's penalty gradient is J₁ᵀ∇ℓ(λ*), and
    λ* → F₁(x) as β → ∞: the penalty method tends to serial BP, with an error O(1/β)."""
    model = two_stage_mlp()
    stage1, stage2 = split_stages(model, 2)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    bp = torch.cat([p.grad.flatten() for p in stage1.parameters()])
    errors = []
    for beta in (1.0, 10.0, 100.0):
        lam, _ = solve_aux(stage1, stage2, x, y, beta, multipliers=False)
        g = stage1_gradient(stage1, lam, x, beta)
        errors.append(float((g - bp).norm() / bp.norm()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02 and errors[1] / errors[2] > 5  # ~1/β


def test_augmented_lagrangian_reaches_the_backprop_gradient_at_finite_beta():
    """At the fixed point of the λ and μ updates the constraint holds exactly and μ/d = ∇ℓ(F₁):
    stage 1's AL gradient is the BP gradient, without β → ∞."""
    model = two_stage_mlp(1)
    stage1, stage2 = split_stages(model, 2)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    bp = torch.cat([p.grad.flatten() for p in stage1.parameters()])
    lam, mu = solve_aux(stage1, stage2, x, y, 2.0, multipliers=True)
    g = stage1_gradient(stage1, lam, x, 2.0, mu)
    torch.testing.assert_close(g, bp, rtol=1e-6, atol=1e-9)


def run_method(name, data, epochs=2, **hp):
    torch.manual_seed(0)
    model = build_model("odenet:4-4", data.input_shape, data.num_classes)
    method = METHODS[name](METHODS[name].HParams(**hp))
    method.setup(model, make_context(data, epochs))
    logs = []
    try:
        for e in range(epochs):
            steps = [method.train_step(b) for b in data.train_batches(0, e)]
            logs.append((steps, method.end_epoch(e)))
    finally:
        method.close()
    return model, logs


def test_first_al_step_matches_hand_computed_multipliers():
    """At the first step λ = F₁(x) (initialisation) and μ = 0, so r = 0 and stage 1 does not move;
    then λ₁ = λ − a·(d/β)·g and μ₁ = β·(F₁ − λ₁) = a·d·g, with g the per-sample CE gradient at λ."""
    data = random_bundle(n_train=8, batch_size=8)
    torch.manual_seed(0)
    model = build_model("odenet:2-2", data.input_shape, data.num_classes)
    stage2 = copy.deepcopy(split_stages(model, 2)[1])
    hp = METHODS["augmented-lagrangian"].HParams(serial_share=0.0, aux_step=0.5)
    method = METHODS["augmented-lagrangian"](hp)
    method.setup(model, make_context(data, 1))
    batch = next(iter(data.train_batches(0, 0)))
    lam0 = split_stages(copy.deepcopy(model), 2)[0](data.fetch(batch.index))
    method.train_step(batch)
    inp = lam0.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(stage2(inp), batch.y, reduction="sum"), inp)
    d = lam0[0].numel()
    torch.testing.assert_close(method.aux.mu[0][batch.index], 0.5 * d * g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.aux.lam[0][batch.index], lam0 - 0.5 * d / hp.beta * g, rtol=1e-4, atol=1e-6)


def test_ds_filter_cuts_logged_communication_by_stride_squared():
    data = random_bundle(n_train=32, batch_size=16)
    _, logs = run_method("penalty", data, epochs=1, serial_share=0.0, ds_stride=2)
    metrics = logs[0][1]
    assert metrics["comm_mb"] == pytest.approx(metrics["comm_mb_without_ds"] / 4)  # 14×14 → 7×7
    assert {"violation_b1", "loss"} <= set(logs[0][0][0])
    assert metrics["modelled_speedup"] > 1.0


def test_serial_parallel_hybrid_switches_to_serial_bp_for_the_last_share():
    data = random_bundle(n_train=32, batch_size=16)
    _, logs = run_method("penalty", data, epochs=2, serial_share=0.5)
    assert [m["serial_phase"] for _, m in logs] == [0.0, 1.0]
    assert "violation_b1" not in logs[1][0][0]


@pytest.mark.parametrize("name", ["penalty", "augmented-lagrangian"])
def test_two_worker_processes_give_the_single_process_parameters(name):
    data = random_bundle(n_train=48, batch_size=16)
    local, local_logs = run_method(name, data, serial_share=0.0)
    dist, dist_logs = run_method(name, data, serial_share=0.0, distributed=True)
    for (pname, a), b in zip(local.state_dict().items(), dist.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=pname)
    for (steps_a, _), (steps_b, _) in zip(local_logs, dist_logs):
        torch.testing.assert_close(torch.stack([s["loss"] for s in steps_a]).float(),
                                   torch.stack([s["loss"] for s in steps_b]).float())



def _exit_at_start(rank, world, port):
    raise SystemExit(3)


def test_a_worker_that_dies_while_starting_fails_set_up_at_once():
    """The rendezvous is polled: a worker gone before it registered (e.g. a failed import) is an
    error naming it, not a block until the gloo timeout (600 s)."""
    import time

    from suite.methods.layer_parallel.stage_runners import start_workers

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stage worker 1 exited with code 3 while starting"):
        start_workers(_exit_at_start, [()], "stage worker")
    assert time.monotonic() - start < 60
