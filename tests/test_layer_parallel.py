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
    """λ starts at a − (d/β)·g₀ (a = F₁(x), g₀ the per-sample CE gradient at a) and μ = 0; the first
    step sees r = a − λ = (d/β)·g₀ and stage 2's gradient g₁ at λ, so λ₁ = λ + a_step·(r − (d/β)·g₁)
    and μ₁ = β·(a − λ₁)."""
    data = random_bundle(n_train=8, batch_size=8)
    torch.manual_seed(0)
    model = build_model("odenet:2-2", data.input_shape, data.num_classes)
    stage2 = copy.deepcopy(split_stages(model, 2)[1])
    hp = METHODS["augmented-lagrangian"].HParams(serial_share=0.0, aux_step=0.5)
    method = METHODS["augmented-lagrangian"](hp)
    method.setup(model, make_context(data, 1))
    batch = next(iter(data.train_batches(0, 0)))
    a = split_stages(copy.deepcopy(model), 2)[0](data.fetch(batch.index)).detach()
    d = a[0].numel()

    def per_sample_gradient(inp):
        inp = inp.detach().requires_grad_(True)
        return torch.autograd.grad(F.cross_entropy(stage2(inp), batch.y, reduction="sum"), inp)[0]

    lam = a - d / hp.beta * per_sample_gradient(a)
    method.train_step(batch)
    lam1 = lam + 0.5 * (a - lam - d / hp.beta * per_sample_gradient(lam))
    torch.testing.assert_close(method.aux.lam[0][batch.index], lam1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.aux.mu[0][batch.index], hp.beta * (a - lam1), rtol=1e-3, atol=1e-4)


def test_first_step_gives_stage_one_the_backprop_gradient():
    """From the first-order λ start, stage 1's first target is a − r with β/d·r = ∂ℓ/∂a: its first
    update is exactly BP's (plain SGD, no weight decay), not zero as from λ = a."""
    data = random_bundle(n_train=16, batch_size=16)
    torch.manual_seed(0)
    model = build_model("odenet:2-2", data.input_shape, data.num_classes)
    reference = copy.deepcopy(model)
    batch = next(iter(data.train_batches(0, 0)))
    F.cross_entropy(reference(batch.x), batch.y).backward()
    stage1_ref = split_stages(reference, 2)[0]
    hp = METHODS["penalty"].HParams(serial_share=0.0, momentum=0.0, weight_decay=0.0)
    method = METHODS["penalty"](hp)
    method.setup(model, make_context(data, 1))
    out = method.train_step(batch)
    assert float(out["lp/violation_b1"]) > 0
    for p, q in zip(method.stages[0].parameters(), stage1_ref.parameters()):  # the gradient of the step
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_per_element_penalty_is_the_sum_of_squares_penalty_with_beta_over_d():
    """The stage objective β/2·mean_j r² + mean_j μ·r and the λ/μ updates equal those of the
    sum-of-squares form β_s/2·‖r‖² + ⟨μ_s, r⟩ with β_s = β/d, μ_s = μ/d, computed here by hand."""
    torch.manual_seed(0)
    stage = nn.Sequential(nn.Linear(4, 6), nn.Tanh()).double()
    x, lam, mu = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64), \
        torch.randn(5, 6, dtype=torch.float64)
    beta, d, a = 3.0, 6, 0.5
    beta_s, mu_s = beta / d, mu / d
    r = stage(x) - lam
    by_hand = (0.5 * beta_s * r.pow(2).sum(1) + (mu_s * r).sum(1)).mean()
    expected = torch.autograd.grad(by_hand, list(stage.parameters()))
    got = stage1_gradient(stage, lam, x, beta, mu)
    torch.testing.assert_close(got, torch.cat([g.flatten() for g in expected]))
    g_next = torch.randn(5, 6, dtype=torch.float64)  # per-sample ∂J₂/∂λ
    with torch.no_grad():
        f = stage(x)
    new_lam, new_mu = aux_update(lam, mu, f, g_next, beta, d, a)
    lam_s = lam + a * (f - lam + mu_s / beta_s - g_next / beta_s)  # a step preconditioned by 1/β_s
    torch.testing.assert_close(new_lam, lam_s)
    torch.testing.assert_close(new_mu / d, mu_s + beta_s * (f - lam_s))


def test_serial_phase_continues_the_schedule_and_the_phases_are_named():
    """The stages follow the run's one step schedule; the serial phase picks it up where the
    parallel phase stopped, instead of restarting at the full rate."""
    data = random_bundle(n_train=32, batch_size=16)
    torch.manual_seed(0)
    model = build_model("odenet:4-4", data.input_shape, data.num_classes)
    hp = METHODS["penalty"].HParams(serial_share=0.25, lr=0.1, schedule="step", milestones=(0.5, 0.75))
    method = METHODS["penalty"](hp)
    method.setup(model, make_context(data, 4))
    assert [method.phase(e) for e in range(4)] == ["parallel"] * 3 + ["serial"]
    lrs = []
    try:
        for e in range(4):
            for b in data.train_batches(0, e):
                method.train_step(b)
                optim = method.serial_optim or method.runner.solvers[0].optim
                lrs.append(optim.opt.param_groups[0]["lr"])
            method.end_epoch(e)
    finally:
        method.close()
    # 8 steps: lr after each step, 0.1 until step 4 (50%), 0.01 until step 6 (75%), then 0.001
    torch.testing.assert_close(torch.tensor(lrs), torch.tensor([0.1] * 3 + [0.01] * 2 + [0.001] * 3))


def test_distributed_stages_on_a_gpu_are_refused_before_any_compute():
    from suite.config import TrainConfig
    model = build_model("odenet:4-4", (1, 28, 28), 10)
    method = METHODS["penalty"](METHODS["penalty"].HParams(distributed=True))
    with pytest.raises(UsageError, match="implemented for CPU"):
        method.reject_settings(model, TrainConfig(), torch.device("cuda"))
    method.reject_settings(model, TrainConfig(), torch.device("cpu"))


def test_ds_filter_cuts_logged_communication_by_stride_squared():
    data = random_bundle(n_train=32, batch_size=16)
    _, logs = run_method("penalty", data, epochs=1, serial_share=0.0, ds_stride=2)
    metrics = logs[0][1]
    assert metrics["lp/comm_mb"] == pytest.approx(metrics["lp/comm_mb_without_ds"] / 4)  # 14×14 → 7×7
    assert {"lp/violation_b1", "loss"} <= set(logs[0][0][0])
    assert metrics["lp/modelled_speedup"] > 1.0


def test_serial_parallel_hybrid_switches_to_serial_bp_for_the_last_share():
    data = random_bundle(n_train=32, batch_size=16)
    _, logs = run_method("penalty", data, epochs=2, serial_share=0.5)
    assert [m["lp/serial_phase"] for _, m in logs] == [0.0, 1.0]
    assert "lp/violation_b1" not in logs[1][0][0]


@pytest.mark.parametrize("name", ["penalty", "augmented-lagrangian"])
def test_two_worker_processes_give_the_single_process_parameters(name):
    data = random_bundle(n_train=48, batch_size=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count, so kernels sum in the same order
    try:
        local, local_logs = run_method(name, data, serial_share=0.0)
        dist, dist_logs = run_method(name, data, serial_share=0.0, distributed=True)
    finally:
        torch.set_num_threads(threads)
    for (pname, a), b in zip(local.state_dict().items(), dist.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=pname)
    for (steps_a, _), (steps_b, _) in zip(local_logs, dist_logs):
        torch.testing.assert_close(torch.stack([s["loss"] for s in steps_a]).float(),
                                   torch.stack([s["loss"] for s in steps_b]).float())



@pytest.mark.parametrize("name", ["penalty", "augmented-lagrangian"])
def test_a_deferred_aux_update_is_applied_before_a_batch_that_needs_its_rows(name):
    """A step's λ/μ update is applied during the next step's compute, which is exact only because
    the next batch's rows are read after it when the batches share samples: the same batch twice
    gives the λ and μ of updating in between, and λ read from outside is never stale."""
    data = random_bundle(n_train=16, batch_size=16)
    batch = next(iter(data.train_batches(0, 0)))
    results = []
    for settle_between in (True, False):
        torch.manual_seed(0)
        model = build_model("odenet:2-2", data.input_shape, data.num_classes)
        method = METHODS[name](METHODS[name].HParams(serial_share=0.0))
        method.setup(model, make_context(data, 1))
        method.train_step(batch)
        if settle_between:
            lam_after_one = method.aux.lam[0].clone()  # reading λ settles
        method.train_step(batch)
        results.append([t.clone() for t in method.aux.lam + (method.aux.mu or [])])
    assert not torch.equal(lam_after_one, results[0][0])  # the second step moved λ
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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


def test_stage_buffers_carry_a_step_both_ways_and_refuse_an_oversized_batch():
    """The shared-memory buffers the distributed stages exchange tensors through: what the
    coordinator writes is what the worker reads, and back; a batch larger than the buffers is an
    error, not a silent truncation."""
    from suite.methods.layer_parallel.stage_runners import StageBuffers
    from suite.methods.layer_parallel.stage_solver import StageResult, StageTask

    bufs = StageBuffers(8, (2, 3), (4,), first=False, last=False, has_mu=True)
    task = StageTask(torch.randn(5, 2, 3), torch.randn(5, 4), torch.randn(5, 4), None, beta=0.5)
    bufs.put_task(task)
    seen = bufs.task(5, 0.5)
    for a, b in ((seen.inp, task.inp), (seen.target, task.target), (seen.mu, task.mu)):
        assert torch.equal(a, b)
    assert seen.y is None and bufs.inp.is_shared()
    out, grad = torch.randn(5, 4), torch.randn(5, 2, 3)
    bufs.put_result(StageResult(out, grad, torch.zeros(3, dtype=torch.float64)), slot=0)
    bufs.put_result(StageResult(-out, -grad, torch.zeros(3, dtype=torch.float64)), slot=1)  # the next step's
    back = bufs.result(5, torch.zeros(3, dtype=torch.float64), slot=0)
    assert torch.equal(back.out, out) and torch.equal(back.grad_in, grad)
    with pytest.raises(ValueError, match="does not fit"):
        bufs.put_task(StageTask(torch.randn(9, 2, 3), torch.randn(9, 4), torch.randn(9, 4), None, beta=0.5))
