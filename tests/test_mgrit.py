"""`mgrit`: the MGRIT solver against the serial forward and autograd's backprop, its known finite
convergence (two-level MGRIT is exact after N/c iterations with F-relaxation, N/(2c) with FCF),
the modelled cost, and the method against `bp`."""

from __future__ import annotations

import pytest
import torch

from suite.config import TrainConfig
from suite.data import DataBundle, Split
from suite.methods import METHODS
from suite.methods.layer_parallel.mgrit import (
    Iterations,
    MgritConfig,
    MgritSolver,
    Phase,
    RunTrace,
    WarmStart,
    critical_path,
    euler_step,
    mgrit_run,
)
from suite.methods.layer_parallel.mgrit_method import MgritHParams
from suite.models import build_model
from suite.models.odenet import EulerStep
from tests.conftest import make_context, random_bundle

CONVERGED = Iterations(tol=1e-13, max_iters=50)


def ode_run(n: int, width: int = 3, seed: int = 0, dtype=torch.float64):
    """n TorchBraid-style Euler steps with horizon 4 (larger steps than odenet's T = 1, so the
    coarse propagators are visibly inexact) and an input batch."""
    torch.manual_seed(seed)
    blocks = [EulerStep(width, 4.0 / n).to(dtype) for _ in range(n)]
    return blocks, torch.randn(2, width, 5, 5, dtype=dtype)


def serial_states(blocks, u0):
    states = [u0]
    with torch.no_grad():
        for block in blocks:
            states.append(block(states[-1]))
    return states


def solve(blocks, u0, config, until):
    with torch.no_grad():
        return MgritSolver(euler_step(blocks), list(range(len(blocks) + 1)), config).solve(u0, until)


def max_relative_error(values, reference):
    return max(float((v - r).norm() / r.norm()) for v, r in zip(values, reference))


@pytest.mark.parametrize("n,cfactor,levels", [(16, 2, 2), (16, 2, 3), (16, 4, 2), (16, 4, 3), (10, 4, 2), (10, 3, 3)])
def test_converged_mgrit_reproduces_the_serial_forward(n, cfactor, levels):
    blocks, u0 = ode_run(n)
    states, trace = solve(blocks, u0, MgritConfig(cfactor, levels), CONVERGED)
    assert max_relative_error(states, serial_states(blocks, u0)) <= 1e-5
    assert trace.iterations < 50 and trace.residuals[-1] <= 1e-13 * trace.residuals[0]


def test_one_level_is_the_serial_forward_bitwise():
    blocks, u0 = ode_run(8, dtype=torch.float32)
    states, trace = solve(blocks, u0, MgritConfig(4, max_levels=1), Iterations(iters=3))
    assert all(torch.equal(s, r) for s, r in zip(states, serial_states(blocks, u0)))
    assert trace.phases == [Phase(1, 8)]  # one chain of N steps: nothing parallel


@pytest.mark.parametrize("nrelax_fine,exact_after", [(0, 4), (1, 2)])
def test_two_level_mgrit_is_exact_after_n_over_c_f_or_n_over_2c_fcf_iterations(nrelax_fine, exact_after):
    """Each F-relaxed two-level iteration makes one more coarse interval exact (FCF: two), so with
    N/c = 4 coarse intervals the residual vanishes at iteration 4 (FCF: 2) and not before."""
    blocks, u0 = ode_run(16)
    _, trace = solve(blocks, u0, MgritConfig(4, 2, nrelax_fine=nrelax_fine), Iterations(iters=exact_after))
    relative = [float(r / trace.residuals[0]) for r in trace.residuals]
    assert relative[exact_after] < 1e-13 and relative[exact_after - 1] > 1e-6
    assert all(b < a for a, b in zip(relative, relative[1:]))  # monotone decrease


def test_modelled_cost_of_a_two_level_iteration():
    """N = 16, c = 4, 2 levels, one F-relaxed iteration: F-relax (4 chains × 3), residual (4 × 1),
    then FAS right-hand side (4 × 1), coarse serial solve (1 × 4), F-relax, residual."""
    blocks, u0 = ode_run(16)
    _, trace = solve(blocks, u0, MgritConfig(4, 2), Iterations(iters=1))
    assert trace.phases == [Phase(4, 3), Phase(4, 1), Phase(4, 1), Phase(1, 4), Phase(4, 3), Phase(4, 1)]
    assert critical_path(trace.phases, workers=4) == 3 + 1 + 1 + 4 + 3 + 1
    assert critical_path(trace.phases, workers=1) == 12 + 4 + 4 + 4 + 12 + 4


def serial_gradients(blocks, u0, weight):
    x = u0.clone().requires_grad_()
    out = x
    for block in blocks:
        out = block(out)
    params = [p for b in blocks for p in b.parameters()]
    return torch.autograd.grad((out * weight).sum(), [x, *params])


@pytest.mark.parametrize("n,cfactor,levels", [(16, 2, 3), (16, 4, 2), (10, 3, 3)])
def test_converged_adjoint_gives_the_backprop_gradients(n, cfactor, levels):
    blocks, u0 = ode_run(n)
    weight = torch.randn_like(u0)
    expected = serial_gradients(blocks, u0, weight)
    x = u0.clone().requires_grad_()
    trace = RunTrace()
    out = mgrit_run(blocks, x, MgritConfig(cfactor, levels), CONVERGED, CONVERGED, trace)
    params = [p for b in blocks for p in b.parameters()]
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    assert max_relative_error(got, expected) <= 1e-4
    assert trace.adjoint.residuals[-1] <= 1e-13 * trace.adjoint.residuals[0] and trace.adjoint.iterations > 1


def test_one_shot_gradient_is_inexact_but_close():
    """The default (2 forward, 1 adjoint iteration, 3 levels) is not the BP gradient, yet near it."""
    blocks, u0 = ode_run(16)
    weight = torch.randn_like(u0)
    expected = serial_gradients(blocks, u0, weight)
    x = u0.clone().requires_grad_()
    out = mgrit_run(blocks, x, MgritConfig(4, 3), Iterations(2), Iterations(1))
    got = torch.autograd.grad((out * weight).sum(), [x, *[p for b in blocks for p in b.parameters()]])
    assert 1e-8 < max_relative_error(got, expected) < 0.5


def train(method_name, hparams, steps, data, init_state):
    """`steps` steps on one batch; the model, the method and each step's outputs."""
    model = build_model("odenet:8-4", data.input_shape, data.num_classes)
    model.load_state_dict(init_state)
    method = METHODS[method_name](hparams)
    method.setup(model, make_context(data))
    batch = next(iter(data.train_batches(0, 0)))
    return model, method, [method.train_step(batch) for _ in range(steps)]


def test_mgrit_lowers_the_training_loss_like_bp_and_reports_diagnostics():
    data = random_bundle(n_train=32, batch_size=16)
    torch.manual_seed(0)
    init = build_model("odenet:8-4", data.input_shape, data.num_classes).state_dict()
    common = {"lr": 0.3, "weight_decay": 0.0}
    hp = MgritHParams(**common, cfactor=2)  # 3 levels on 8 steps, 2 + 1 iterations: inexact
    _, method, outs = train("mgrit", hp, 10, data, init)
    _, _, bp_outs = train("bp", METHODS["bp"].HParams(**common), 10, data, init)
    losses, bp_losses = [float(o["loss"]) for o in outs], [float(o["loss"]) for o in bp_outs]
    assert losses[-1] < losses[0] - 0.05
    assert max(abs(a - b) for a, b in zip(losses, bp_losses)) < 1e-2
    assert all(o["mgrit/fwd_iters"] == 2 and o["mgrit/adj_iters"] == 1 for o in outs)
    assert all(o["mgrit/fwd_residual"] > 0 and o["mgrit/adj_residual"] > 0 for o in outs)
    metrics = method.end_epoch(0)
    assert metrics["mgrit/modelled_workers"] == 4 and metrics["mgrit/modelled_speedup"] == metrics["mgrit/modelled_speedup_p4"]
    assert 0 < metrics["mgrit/modelled_speedup_p1"] < metrics["mgrit/modelled_speedup_p2"] < metrics["mgrit/modelled_speedup_p4"]


def test_converged_mgrit_step_equals_a_bp_step():
    data = random_bundle(n_train=32, batch_size=16)
    torch.manual_seed(0)
    init = build_model("odenet:8-4", data.input_shape, data.num_classes).state_dict()
    common = {"lr": 0.1, "momentum": 0.0, "weight_decay": 1e-4}
    bp_model, _, _ = train("bp", METHODS["bp"].HParams(**common), 1, data, init)
    exact = MgritHParams(**common, cfactor=2, max_levels=3, fwd_iters=8, bwd_iters=8)  # ≥ N/c: exact
    mg_model, _, _ = train("mgrit", exact, 1, data, init)
    with torch.no_grad():
        for (name, p), q in zip(bp_model.named_parameters(), mg_model.parameters()):
            bp_update, mgrit_update = p - init[name], q - init[name]
            assert bp_update.abs().max() > 0, f"{name} did not move"
            assert float((mgrit_update - bp_update).norm() / bp_update.norm()) <= 1e-5, name


@pytest.mark.parametrize("model_name", ["resnet20", "mlp"])
def test_check_skips_models_without_ode_runs(model_name):
    data = random_bundle(n_train=16)
    model = build_model(model_name, data.input_shape, data.num_classes)
    reason = METHODS["mgrit"]().skip_reason(model, data)
    assert reason and "ODE-form" in reason and model_name in reason


def test_harness_runs_and_logs_mgrit_on_mnist(tracker, mnist_root):
    from suite.config import Cell
    from suite.harness import run_cell
    cell = Cell("mgrit", "odenet:4-4", "mnist", 0, "smoke").with_overrides(
        epochs=1, train_subset=64, test_subset=32, batch_size=32)
    result = run_cell(cell, tracker)
    assert result.status == "finished", result.reason
    metrics = tracker.client.get_run(result.run_id).data.metrics
    for key in ("mgrit/fwd_residual", "mgrit/adj_residual", "mgrit/modelled_speedup", "test_acc"):
        assert key in metrics


def with_probe_split(data: DataBundle, n: int | None = 16) -> DataBundle:
    """The same bundle with a probe split of the last n training samples (n = None: no probe split)."""
    probe = None if n is None else Split(data.train.images[-n:], data.train.labels[-n:])
    return DataBundle(data.spec, data.train, data.test, None, probe, batch_size=data.batch_size,
                      eval_batch_size=data.eval_batch_size, augment="none", device=data.device,
                      channels_last=False)


def test_convergence_probe_logs_falling_residuals_and_leaves_the_gradients_alone():
    """The diagnostics probe on a 2-level config (N = 8, c = 4, F-relaxation): relative residuals
    fall each iteration and reach ≤ 1e-6 by iteration N/c = 2 for both solves; no .grad is
    written; it reads the probe split, and nothing without one (never the test split)."""
    data = with_probe_split(random_bundle(n_train=32, n_test=32, batch_size=16))
    model = build_model("odenet:8-4-fc", data.input_shape, data.num_classes)
    method = METHODS["mgrit"](MgritHParams(cfactor=4, max_levels=2, probe_iters=4, probe_batch=16))
    method.setup(model, make_context(data))
    torch.testing.assert_close(method.probe_data[0], data.normalise(data.probe.images))
    assert not any(k.startswith("mgrit/probe_") for k in method.end_epoch(0))  # on the clock: no probe
    metrics = method.diagnostics(0)
    assert all(p.grad is None for p in model.parameters())
    for solve in ("fwd", "adj"):
        rel = [metrics[f"mgrit/probe_{solve}_rel_it{k}"] for k in range(1, 5)]
        assert metrics[f"mgrit/probe_{solve}_res0"] > 0
        assert 1e-6 < rel[0] < 1 and rel[1] <= 1e-6, (solve, rel)
    no_probe = with_probe_split(random_bundle(n_train=32, n_test=32, batch_size=16), None)  # test split only
    method = METHODS["mgrit"](MgritHParams(probe_iters=4))
    method.setup(build_model("odenet:8-4", data.input_shape, data.num_classes), make_context(no_probe))
    assert method.probe_data is None and method.diagnostics(0) == {}
    off = METHODS["mgrit"](MgritHParams(probe_iters=0))
    off.setup(build_model("odenet:8-4", data.input_shape, data.num_classes), make_context(data))
    assert off.diagnostics(0) == {}


def test_chunks_are_whole_level0_intervals_shared_out_evenly():
    from suite.methods.layer_parallel.mgrit_placement import chunk_owners
    assert chunk_owners(16, 4, 2) == [0] * 8 + [1] * 8
    assert chunk_owners(10, 3, 2) == [0] * 6 + [1] * 4  # 4 intervals (3, 3, 3, 1 blocks): 2 each
    assert chunk_owners(10, 4, 3) == [0] * 4 + [1] * 4 + [2] * 2
    assert chunk_owners(8, 2, 1) == [0] * 8


@pytest.mark.parametrize("cfactor,levels", [(4, 2), (3, 3)])
def test_two_processes_give_the_single_process_weights_bitwise(cfactor, levels):
    """The same mathematics placed on 2 processes: N = 10 is not a multiple of c = 4 or 3, so the
    adjoint's intervals straddle the chunk boundary and the coarse levels hop between ranks."""
    data = with_probe_split(random_bundle(n_train=32, n_test=32, batch_size=16))
    torch.manual_seed(0)
    init = build_model("odenet:10-4-fc", data.input_shape, data.num_classes).state_dict()
    hp = {"lr": 0.3, "cfactor": cfactor, "max_levels": levels, "probe_iters": 3, "probe_batch": 16}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count, so kernels sum in the same order
    try:
        results = []
        for workers in (1, 2):
            model = build_model("odenet:10-4-fc", data.input_shape, data.num_classes)
            model.load_state_dict(init)
            method = METHODS["mgrit"](MgritHParams(**hp, workers=workers))
            method.setup(model, make_context(data))
            try:
                batch = next(iter(data.train_batches(0, 0)))
                steps = [method.train_step(batch) for _ in range(3)]
                metrics = method.end_epoch(0) | method.diagnostics(0)
            finally:
                method.close()
            results.append((model, steps, metrics))
    finally:
        torch.set_num_threads(threads)
    (local, local_steps, local_metrics), (spread, spread_steps, spread_metrics) = results
    for (name, p), q in zip(local.named_parameters(), spread.parameters()):
        assert not torch.equal(p, init[name]), f"{name} did not move"
        assert torch.equal(p, q), name
    for a, b in zip(local_steps, spread_steps):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    probe = [k for k in local_metrics if k.startswith("mgrit/probe_")]
    assert probe and all(local_metrics[k] == spread_metrics[k] for k in probe)


def test_more_workers_than_coarse_intervals_is_refused_before_any_compute():
    from suite.errors import UsageError
    data = random_bundle(n_train=16)
    model = build_model("odenet:8-4", data.input_shape, data.num_classes)
    with pytest.raises(UsageError, match="workers=3 is more than the 2 coarse intervals"):
        METHODS["mgrit"](MgritHParams(workers=3)).reject_settings(model, TrainConfig(), torch.device("cpu"))


def test_worker_processes_on_a_gpu_are_refused_before_any_compute():
    from suite.errors import UsageError
    data = random_bundle(n_train=16)
    model = build_model("odenet:8-4", data.input_shape, data.num_classes)
    with pytest.raises(UsageError, match="implemented for CPU"):
        METHODS["mgrit"](MgritHParams(workers=2)).reject_settings(model, TrainConfig(), torch.device("cuda"))
    METHODS["mgrit"](MgritHParams(workers=2)).reject_settings(model, TrainConfig(), torch.device("cpu"))


# -- TorchBraid's options: skipping the first down-cycle, warm starts ------------------------------

def coarse_serial_guess(blocks, u0, cfactor: int, levels: int):
    """XBraid's skipped first cycle, computed independently of the solver: the coarsest grid (every
    c^(L−1)-th point) is propagated serially from u_0 with its coarse steps; each finer level takes
    the coarse values at its C-points and fills its F-points by its own steps (F-relaxation)."""
    n = len(blocks)
    step = euler_step(blocks)
    points = [list(range(0, n + 1, cfactor ** lvl)) for lvl in range(levels)]
    values = {0: u0}
    for lvl in reversed(range(levels)):
        grid = points[lvl]
        known = dict(values)
        for i in range(1, len(grid)):
            if lvl == levels - 1 or grid[i] not in values:  # coarsest: all; finer: F-points
                known[grid[i]] = step(grid[i - 1], grid[i], known[grid[i - 1]])
        values = known
    return [values[p] for p in range(n + 1)]


def test_skip_downcycle_first_cycle_is_the_coarse_propagation_then_f_relaxation():
    """One iteration with the down-cycle skipped is exactly XBraid's first cycle with skip = 1."""
    blocks, u0 = ode_run(16)
    config = MgritConfig(4, 3, skip_downcycle=True)
    states, trace = solve(blocks, u0, config, Iterations(iters=1))
    with torch.no_grad():
        expected = coarse_serial_guess(blocks, u0, 4, 3)
    assert all(torch.equal(s, e) for s, e in zip(states, expected))
    assert trace.iterations == 1 and trace.first == 1 and len(trace.residuals) == 1
    # no relaxation and no residual on the way down: the coarsest level (points 0, 16) serially
    # (1 chain × 1 step), level 1's one interval F-relaxed (1 × 3), level 0's four (4 × 3), then
    # the residual at level 0's C-points (4 × 1)
    assert trace.phases == [Phase(1, 1), Phase(1, 3), Phase(4, 3), Phase(4, 1)]
    _, plain = solve(blocks, u0, MgritConfig(4, 3), Iterations(iters=1))
    assert critical_path(trace.phases, 4) < critical_path(plain.phases, 4)


@pytest.mark.parametrize("n,cfactor,levels", [(16, 4, 3), (16, 2, 2), (10, 3, 3)])
def test_skip_downcycle_still_converges_to_the_serial_states_and_gradients(n, cfactor, levels):
    blocks, u0 = ode_run(n)
    config = MgritConfig(cfactor, levels, skip_downcycle=True)
    states, trace = solve(blocks, u0, config, CONVERGED)
    assert max_relative_error(states, serial_states(blocks, u0)) <= 1e-5
    assert trace.residuals[-1] <= 1e-13 * trace.residuals[0]
    weight = torch.randn_like(u0)
    expected = serial_gradients(blocks, u0, weight)
    x = u0.clone().requires_grad_()
    out = mgrit_run(blocks, x, config, CONVERGED, CONVERGED)
    got = torch.autograd.grad((out * weight).sum(), [x, *[p for b in blocks for p in b.parameters()]])
    assert max_relative_error(got, expected) <= 1e-4


def test_warm_start_from_an_exact_solution_of_the_same_input_takes_no_iteration():
    blocks, u0 = ode_run(16)
    warm = WarmStart()
    from suite.methods.layer_parallel.mgrit import LocalPlacement, run_forward
    with torch.no_grad():
        _, cold_states, cold = run_forward(blocks, u0, MgritConfig(4, 3), CONVERGED, LocalPlacement(), warm)
        _, states, again = run_forward(blocks, u0, MgritConfig(4, 3), CONVERGED, LocalPlacement(), warm)
    assert cold.iterations > 1 and again.iterations == 0
    assert again.reference == cold.reference  # measured against the cold solve's reference
    assert max_relative_error(states, serial_states(blocks, u0)) <= 1e-5
    # fixed iteration counts: starting at the solution, one more cycle stays there
    with torch.no_grad():
        _, one, _ = run_forward(blocks, u0, MgritConfig(4, 3), Iterations(1), LocalPlacement(), warm)
    assert max_relative_error(one, serial_states(blocks, u0)) <= 1e-5


def test_warm_start_guess_is_used_and_a_new_batch_shape_starts_cold():
    blocks, u0 = ode_run(16)
    guess = serial_states(blocks, u0)
    other = torch.randn_like(u0)
    cold, _ = solve(blocks, other, MgritConfig(4, 3), Iterations(1))
    with torch.no_grad():
        warm, _ = MgritSolver(euler_step(blocks), list(range(17)), MgritConfig(4, 3)).solve(other, Iterations(1), guess)
    assert torch.equal(warm[0], other) and not torch.equal(warm[-1], cold[-1])
    keep = WarmStart()
    keep.kept["fwd"] = (guess, torch.tensor(1.0))
    assert keep.guess("fwd", other)[0] is guess
    assert keep.guess("fwd", other[:1]) == (None, None)  # the epoch's last, shorter batch
    assert keep.guess("adj", other) == (None, None)


def test_with_skip_downcycle_a_warm_start_changes_nothing():
    """XBraid's skipped cycle overwrites every point, so TorchBraid's warm restart has no effect
    on the states when skip is on (its default): bitwise equal to a cold solve."""
    blocks, u0 = ode_run(16)
    config = MgritConfig(4, 3, skip_downcycle=True)
    cold, _ = solve(blocks, u0, config, Iterations(2))
    with torch.no_grad():
        warm, _ = MgritSolver(euler_step(blocks), list(range(17)), config).solve(
            u0, Iterations(2), [torch.randn_like(u0) for _ in range(17)])
    assert all(torch.equal(a, b) for a, b in zip(cold, warm))


def test_method_warm_start_keeps_the_training_solves_and_the_probe_leaves_them_alone():
    data = with_probe_split(random_bundle(n_train=48, n_test=16, batch_size=16))
    torch.manual_seed(0)
    model = build_model("odenet:8-4-fc", data.input_shape, data.num_classes)
    method = METHODS["mgrit"](MgritHParams(cfactor=2, warm_start=True, skip_downcycle=False, probe_iters=2,
                                           probe_batch=8, lr=0.01))
    method.setup(model, make_context(data))
    batches = list(data.train_batches(0, 0))
    method.train_step(batches[0])
    kept = method.team.warm[0]
    fwd_states, _ = kept.kept["fwd"]
    assert fwd_states[0].shape[0] == 16 and set(kept.kept) == {"fwd", "adj"}
    method.diagnostics(0)  # an 8-sample probe must not replace the 16-sample training states
    assert method.team.warm[0].kept["fwd"][0] is fwd_states
    out = method.train_step(batches[1])
    assert float(out["mgrit/fwd_iters"]) == 2 and float(out["loss"]) > 0
