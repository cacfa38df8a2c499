"""Scale-out and reliability: executors, SIGKILL and resume, concurrent writers, checkpoints
loaded safely, and the UI bound to localhost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from suite.config import Cell, resolve
from suite.executors import run_cells
from suite.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
FAST = dict(epochs=1, train_subset=64, test_subset=64, batch_size=32, measure_flops="false")
SLOW = dict(epochs=6, train_subset=3000, test_subset=64, batch_size=64, measure_flops="false")


def grid():
    return [Cell("bp", "mlp", "mnist", s, "smoke").with_overrides(**FAST) for s in range(2)] + \
           [Cell("bp", "cnn", "mnist", 0, "smoke").with_overrides(**SLOW)]


DRIVER = textwrap.dedent("""
    import sys
    from suite.cli import main
    from suite.experiments import EXPERIMENTS, Experiment
    from tests.test_reliability import grid
    EXPERIMENTS["reliability"] = Experiment("reliability", "test grid", "tests", lambda p, s: grid())
    sys.exit(main(["reproduce", "reliability", "--profile", "smoke", "--no-report"] + sys.argv[1:]))
""")


def start_reproduce(workdir: Path, *extra: str) -> subprocess.Popen:
    script = workdir / "driver.py"
    script.write_text(DRIVER)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), *extra], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def statuses(tracker: Tracker) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for cell in grid():
        h = resolve(cell).cell_hash
        out[cell.label] = sorted((r.data.tags.get("status"), r.info.run_id) for r in tracker.runs_for(h))
    return out


def test_sigkill_mid_cell_then_rerun_redoes_only_the_killed_cell(tmp_path):
    proc = start_reproduce(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    slow = resolve(grid()[-1]).cell_hash
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until the fast cells are done and the slow one is running
        time.sleep(1.0)
        if (tmp_path / "mlruns.db").exists():
            tracker = Tracker(uri)
            if any(r.data.tags.get("status") == "running" for r in tracker.runs_for(slow)):
                break
        assert proc.poll() is None, proc.stdout.read()
    else:
        pytest.fail("the slow cell never started")
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tracker = Tracker(uri)
    before = statuses(tracker)
    finished_before = {label: runs for label, runs in before.items() if runs and runs[0][0] == "finished"}
    assert len(finished_before) == 2 and [s for s, _ in before[grid()[-1].label]] == ["running"]

    rerun = start_reproduce(tmp_path)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
    after = statuses(tracker)
    for label, runs in finished_before.items():
        assert after[label] == runs  # not recomputed
    assert [s for s, _ in after[grid()[-1].label]] == ["finished", "killed"]
    for runs in after.values():
        assert [s for s, _ in runs].count("finished") == 1


def test_two_concurrent_reproduce_processes_leave_one_finished_run_per_cell(tmp_path):
    procs = [start_reproduce(tmp_path) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=400) == 0, p.stdout.read()
    for label, runs in statuses(Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")).items():
        assert [s for s, _ in runs] == ["finished"], label


@pytest.mark.parametrize("executor,jobs", [("pool", 2), ("submitit-local", 1)])
def test_executors_run_every_cell_through_run_cell(tmp_path, executor, jobs, mnist_root):
    from suite.executors import SlurmOptions
    cells = grid()[:2]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    Tracker(uri)
    results = run_cells(cells, uri, executor=executor, jobs=jobs, progress=False,
                        slurm=SlurmOptions(folder=str(tmp_path / "submitit")))
    assert sorted(r.status for r in results) == ["finished", "finished"]
    again = run_cells(cells, uri, executor=executor, jobs=jobs, progress=False,
                      slurm=SlurmOptions(folder=str(tmp_path / "submitit")))
    assert [r.status for r in again] == ["cached", "cached"]


def test_checkpoints_round_trip_and_refuse_pickled_code(tmp_path):
    from suite.checkpoint import load_checkpoint, save_checkpoint
    from suite.models import build_model
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10)
    path = save_checkpoint(model, tmp_path / "model.pt")
    fresh = load_checkpoint(build_model("mlp", (1, 28, 28), 10), path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(model, tmp_path / "evil.pt")


def test_ui_binds_to_localhost_by_default(monkeypatch):
    from suite import cli, shutdown
    calls = []

    class FakeServer:
        pid = 0

        def __init__(self, cmd, **kwargs):
            calls.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", FakeServer)
    monkeypatch.setattr(shutdown, "end_group", lambda server: None)
    monkeypatch.setattr(shutdown, "group_watchdog", lambda pgid: None)
    assert cli.main(["ui"]) == 0
    cmd = calls[0]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_grid_order_counts_mgrit_iterations():
    from suite.config import Cell
    from suite.executors import estimated_cost
    bp = estimated_cost(Cell("bp", "odenet:8-4", "mnist", 0, "smoke"))
    one_shot = estimated_cost(Cell("mgrit", "odenet:8-4", "mnist", 0, "smoke"))  # 2 + 1 iterations
    assert one_shot == pytest.approx(4 * bp)
