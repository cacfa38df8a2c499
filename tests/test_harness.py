"""The harness end to end on real MNIST with an MLflow store in a temp dir: logging, resume,
killed runs, divergence, determinism, identical initial weights across methods."""

from __future__ import annotations

import dataclasses
import json

import torch

from suite.config import Cell, resolve
from suite.harness import init_seed, run_cell
from suite.methods import METHODS
from suite.methods.bp import BP
from suite.models import build_model

SMOKE = dict(epochs=2, train_subset=96, test_subset=64, batch_size=32)


def cell(method="bp", model="mlp", seed=0, **over):
    return Cell(method, model, "mnist", seed, "smoke").with_overrides(**(SMOKE | over))


def test_run_logs_params_tags_and_per_epoch_metrics(tracker, mnist_root):
    result = run_cell(cell(), tracker)
    assert result.status == "finished"
    run = tracker.client.get_run(result.run_id)
    tags, params = run.data.tags, run.data.params
    assert tags["status"] == "finished" and tags["method"] == "bp" and tags["model"] == "mlp"
    assert tags["cell_hash"] == resolve(cell()).cell_hash
    assert tags["git_commit"] and torch.__version__.startswith(tags["version.torch"]) and "hardware.cpu_count" in tags
    assert params["train.epochs"] == "2" and params["hp.lr"] == "0.1"
    history = tracker.client.get_metric_history(result.run_id, "test_acc")
    assert [m.step for m in history] == [0, 1]
    for key in ("train_loss", "train_acc", "epoch_time", "images_per_s", "params"):
        assert key in run.data.metrics
    artifacts = [a.path for a in tracker.client.list_artifacts(result.run_id)]
    assert "config.json" in artifacts


def test_resume_trains_nothing_the_second_time(tracker, mnist_root):
    first = run_cell(cell(), tracker)
    second = run_cell(cell(), tracker)
    assert first.status == "finished" and second.status == "cached"
    assert len(tracker.runs_for(resolve(cell()).cell_hash)) == 1


def test_interrupted_run_is_marked_killed_and_redone(tracker, mnist_root):
    cfg = resolve(cell())
    ghost = tracker.client.create_run(tracker.experiment_id, tags={
        "cell_hash": cfg.cell_hash, "status": "running", "host": __import__("socket").gethostname(),
        "pid": "999999999", "heartbeat": "0"})
    result = run_cell(cell(), tracker)
    assert result.status == "finished"
    statuses = {r.info.run_id: r.data.tags["status"] for r in tracker.runs_for(cfg.cell_hash)}
    assert statuses == {ghost.info.run_id: "killed", result.run_id: "finished"}


class NaNAfterTwo(BP):
    """A method whose loss turns non-finite at its third step (for the divergence test)."""
    name = "nan-after-two"
    summary = "test only"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.steps = 0

    def train_step(self, batch):
        out = super().train_step(batch)
        self.steps += 1
        if self.steps >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nonfinite_loss_ends_run_as_diverged_and_grid_goes_on(tracker, mnist_root, monkeypatch):
    monkeypatch.setitem(METHODS, NaNAfterTwo.name, NaNAfterTwo)
    diverged = run_cell(cell("nan-after-two"), tracker)
    assert diverged.status == "diverged" and "step 2" in diverged.reason
    run = tracker.client.get_run(diverged.run_id)
    assert run.data.tags["status"] == "diverged" and run.data.metrics["diverged_step"] == 2
    assert run.info.status == "FAILED"  # not MLflow's green FINISHED
    assert run_cell(cell("bp"), tracker).status == "finished"


def test_same_cell_twice_gives_identical_metrics(tmp_path, mnist_root):
    from suite.tracking import Tracker
    a = run_cell(cell(model="cnn"), Tracker(f"sqlite:///{tmp_path / 'a.db'}"))
    b = run_cell(cell(model="cnn"), Tracker(f"sqlite:///{tmp_path / 'b.db'}"))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert a.metrics[key] == b.metrics[key]


def test_every_method_of_a_cell_starts_from_the_same_weights():
    def weights(method_seed_model):
        torch.manual_seed(init_seed(0, method_seed_model))
        return build_model(method_seed_model, (1, 28, 28), 10).state_dict()

    a, b = weights("resnet20"), weights("resnet20")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert init_seed(0, "resnet20") != init_seed(1, "resnet20")


def test_incompatible_cell_is_recorded_as_skipped(tracker, mnist_root, monkeypatch):
    class Picky(BP):
        name = "picky"
        summary = "test only"

        def skip_reason(self, model, data):
            return "needs residual blocks" if not any(getattr(b, "residual", False) for b in model.blocks) else None

    monkeypatch.setitem(METHODS, "picky", Picky)
    result = run_cell(cell("picky"), tracker)
    assert result.status == "skipped" and result.reason == "needs residual blocks"
    assert tracker.client.get_run(result.run_id).data.tags["status_reason"] == "needs residual blocks"
    assert run_cell(cell("picky"), tracker).status == "cached"


def test_failure_is_recorded_and_redone_next_time(tracker, mnist_root, monkeypatch):
    class Broken(BP):
        name = "broken"
        summary = "test only"

        def train_step(self, batch):
            raise RuntimeError("boom")

    monkeypatch.setitem(METHODS, "broken", Broken)
    first = run_cell(cell("broken"), tracker)
    assert first.status == "failed" and "boom" in first.reason
    assert "boom" in tracker.client.get_run(first.run_id).data.tags["status_reason"]
    second = run_cell(cell("broken"), tracker)
    assert second.status == "failed" and second.run_id != first.run_id


def test_config_artifact_is_the_resolved_config(tracker, mnist_root):
    result = run_cell(cell(lr=0.05), tracker)
    path = tracker.client.download_artifacts(result.run_id, "config.json")
    config = json.loads(open(path).read())
    assert config["hparams"]["lr"] == 0.05 and config["train"]["epochs"] == 2
    expected = json.loads(json.dumps(dataclasses.asdict(resolve(cell(lr=0.05)).hparams)))
    assert config["hparams"] == expected
