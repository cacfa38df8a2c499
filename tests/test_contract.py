"""The measurement contract: diagnostics off the clock, divergence by bound, the test split out of
the methods' reach, non-finite settings refused, and results independent of scheduling."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from suite.config import Cell
from suite.harness import DivergenceMonitor, run_cell
from suite.methods import METHODS, Method
from suite.methods.bp import BP
from suite.metrics import Metric

SMOKE = dict(epochs=2, train_subset=96, test_subset=64, batch_size=32)


def cell(method="bp", model="mlp", **over):
    return Cell(method, model, "mnist", 0, "smoke").with_overrides(**(SMOKE | over))


class SlowDiagnostics(BP):
    """BP whose diagnostics take 0.4 s per epoch (a stand-in for an alignment probe)."""
    name = "slow-diagnostics"
    summary = "test only"
    METRICS = BP.METRICS + (Metric("probe", "1", "measured", "the stand-in probe's value"),)

    def diagnostics(self, epoch):
        time.sleep(0.4)
        return {"probe": 1.0}


def test_a_slow_diagnostic_is_not_charged_to_training_time(tracker, mnist_root, monkeypatch):
    monkeypatch.setitem(METHODS, SlowDiagnostics.name, SlowDiagnostics)
    slow = run_cell(cell(SlowDiagnostics.name), tracker)
    fast = run_cell(cell("bp"), tracker)
    assert slow.status == fast.status == "finished"
    assert slow.metrics["diag_time"] >= 0.8  # 2 epochs × 0.4 s, logged separately
    assert slow.metrics["train_time"] < 0.4  # 6 MLP steps: far less than one diagnostic
    assert slow.metrics["probe"] == 1.0
    assert slow.metrics["test_acc"] == fast.metrics["test_acc"]  # same weights, same batches


class Growing(Method):
    """A loss that grows 1.5× per step from ln 10, with no model update: the divergence rule's
    hand-computable case."""
    name = "growing-loss"
    summary = "test only"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.t = 0

    def train_step(self, batch):
        loss = torch.tensor(2.302585 * 1.5 ** self.t)
        self.t += 1
        return {"loss": loss, "correct": torch.tensor(0)}


def test_a_loss_blowup_ends_as_diverged_at_the_hand_computed_step(tracker, mnist_root, monkeypatch):
    monkeypatch.setitem(METHODS, Growing.name, Growing)
    # windows of 4 steps; reference = median of steps 0-3 = ln10·(1.5+2.25)/2; bound = 10× that.
    # window 2 (steps 4-7): mean = ln10·(5.06+7.59+11.39+17.09)/4 = 10.3·ln10 > 18.75·ln10? no.
    # window 3 (steps 8-11): mean ≈ 65·ln10 > bound = 18.75·ln10: first step above it is 8
    # (1.5^8 = 25.6 > 18.75; 1.5^7 = 17.1 is below).
    result = run_cell(cell(Growing.name, epochs=1, train_subset=400, batch_size=16, check_every=4), tracker)
    assert result.status == "diverged", result
    assert result.metrics["diverged_step"] == 8
    run = tracker.client.get_run(result.run_id)
    assert run.data.tags["status"] == "diverged" and "step 8" in run.data.tags["status_reason"]


def test_divergence_factor_zero_checks_only_for_non_finite_losses():
    monitor = DivergenceMonitor(0.0)
    assert monitor.first_bad([torch.tensor(1.0), torch.tensor(1e30)]) is None
    assert monitor.first_bad([torch.tensor(1.0), torch.tensor(float("inf"))]) == 1


class Snoop(BP):
    """Records what the method was given, so the test can search it for the test split."""
    name = "snoop"
    summary = "test only"
    seen: list = []

    def setup(self, model, ctx):
        super().setup(model, ctx)
        Snoop.seen.append(self)


def _reachable_tensors(root, limit: int = 200_000) -> list[torch.Tensor]:
    """Every tensor reachable from `root` through object references (breadth first)."""
    found, seen, frontier = [], {id(root)}, [root]
    while frontier and len(seen) < limit:
        nxt = []
        for obj in frontier:
            if isinstance(obj, torch.Tensor):
                found.append(obj)
                continue
            if isinstance(obj, type) or callable(obj) and not hasattr(obj, "__dict__"):
                continue
            for ref in gc.get_referents(obj):
                if id(ref) not in seen and not isinstance(ref, (str, bytes, int, float, type)):
                    seen.add(id(ref))
                    nxt.append(ref)
        frontier = nxt
    return found


def test_no_method_can_reach_the_test_split(tracker, mnist_root, monkeypatch):
    from suite.config import resolve
    from suite.harness import prepare

    monkeypatch.setitem(METHODS, Snoop.name, Snoop)
    Snoop.seen.clear()
    assert run_cell(cell(Snoop.name), tracker).status == "finished"
    method = Snoop.seen[0]
    with pytest.raises(KeyError, match="test"):
        list(method.ctx.data.eval_batches("test"))
    assert not hasattr(method.ctx.data, "test")
    # the harness's own bundle holds the test images; none of the method's objects do
    _, data, _, _ = prepare(resolve(cell(Snoop.name)))
    test_bytes = data.test.images.flatten()[:4096]
    for tensor in _reachable_tensors(method):
        if tensor.dtype == torch.uint8 and tensor.numel() == data.test.images.numel():
            assert not torch.equal(tensor.flatten()[:4096], test_bytes)
    assert method.ctx.data.probe is not None and len(method.ctx.data.probe) == 9  # 96 // 10 (smoke: ≤ 12)


def test_non_finite_settings_exit_2_and_log_nothing(tmp_path, mnist_root, capsys):
    from suite import cli
    from suite.tracking import Tracker
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    for bad in ("lr=nan", "lr=inf", "momentum=-inf", "diverge_factor=nan"):
        code = cli.main(["run", "bp", "mlp", "mnist", "--profile", "smoke", "--tracking-uri", uri, "--set", bad])
        assert code == 2, bad
        assert "finite" in capsys.readouterr().err
    store = Tracker(uri)
    assert store.client.search_runs([store.experiment_id]) == []


def test_the_run_fixes_its_thread_count_whatever_the_caller_has(tracker, mnist_root):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = run_cell(cell(model="cnn"), tracker)
        torch.set_num_threads(1)
        # check_every changes the cell's identity (so it is not served from the store), not its results
        b = run_cell(cell(model="cnn", check_every=24), tracker)
    finally:
        torch.set_num_threads(before)
    assert a.metrics["test_acc"] == b.metrics["test_acc"] and a.metrics["train_loss"] == b.metrics["train_loss"]
    params = tracker.client.get_run(a.run_id).data.params
    assert params["train.threads"] == "1"


@pytest.mark.slow
def test_jobs_1_and_jobs_2_give_identical_results_on_the_smoke_summary(tmp_path, mnist_root):
    from suite.executors import run_cells
    from suite.experiments import EXPERIMENTS
    from suite.tracking import Tracker

    cells = [c for c in EXPERIMENTS["summary"].cells("smoke") if c.model in ("mlp", "cnn")]
    finals = []
    for jobs in (1, 2):
        uri = f"sqlite:///{tmp_path / f'jobs{jobs}.db'}"
        Tracker(uri)
        results = run_cells(cells, uri, executor="pool" if jobs > 1 else "inprocess", jobs=jobs, progress=False)
        finals.append({r.cell.label: (r.status, r.metrics.get("test_acc"), r.metrics.get("train_loss"))
                       for r in results})
    assert finals[0] == finals[1]
    assert sum(status == "finished" for status, _, _ in finals[0].values()) >= len(cells) // 2


class OneOffFirstStep(Method):
    """A first step with one-off work (a 64×64 matmul, like penalty/AL's auxiliary-variable
    initialisation) and steady steps of an 8×8 matmul."""
    name = "one-off-first-step"
    summary = "test only"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.initialised = False

    def train_step(self, batch):
        n = 8 if self.initialised else 64
        self.initialised = True
        torch.ones(n, n) @ torch.ones(n, n)
        return {"loss": torch.tensor(1.0), "correct": torch.tensor(0)}


def test_the_step_probe_counts_a_steady_step_not_one_off_work():
    from suite.measure import probe_step
    method = OneOffFirstStep(OneOffFirstStep.HParams())
    method.initialised = False
    assert probe_step(method, batch=None)["flops_per_step"] == 2 * 8 ** 3  # not 2 · 64³
    assert method.initialised is False  # measured on a copy: the run itself is untouched


def test_before_step_sees_the_gradients_and_its_change_is_the_update():
    """A sign-SGD made by overriding one hook equals the update written out by hand."""
    from suite.methods.bp import BPHParams
    from tests.conftest import make_context, random_bundle

    class SignSGD(BP):
        def before_step(self):
            for p in self.model.parameters():
                p.grad.sign_()

    data = random_bundle(n_train=16, batch_size=16)
    torch.manual_seed(0)
    from suite.models import build_model
    model = build_model("mlp", data.input_shape, data.num_classes)
    start = [p.detach().clone() for p in model.parameters()]
    method = SignSGD(BPHParams(lr=0.01, momentum=0.0, weight_decay=0.0, schedule="constant"))
    method.setup(model, make_context(data))
    batch = next(data.train_batches(0, 0))
    grads = torch.autograd.grad(method.loss_fn(model(batch.x), batch.y), list(model.parameters()))
    method.train_step(batch)
    for before, grad, after in zip(start, grads, model.parameters()):
        torch.testing.assert_close(after.detach(), before - 0.01 * grad.sign())
