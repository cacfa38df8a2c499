"""A terminated `bpsuite` leaves no process behind: neither MLflow's server (and the workers it
forks) under `bpsuite ui`, nor the pool's workers and fork server under `bpsuite reproduce`.

The process tree is read from /proc, independently of `suite.shutdown`'s own bookkeeping: every
process whose parent chain leads to the command, or that sits in a process group the command
started, must be gone after SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

REPO = Path(__file__).resolve().parents[1]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live, non-zombie process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[2]))


def _processes() -> dict[int, tuple[int, int]]:
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        st = _stat(int(entry.name))
        if st:
            out[int(entry.name)] = st
    return out


def _tree(root: int) -> set[int]:
    """`root`'s live descendants, plus every member of a process group led by one of them."""
    procs = _processes()
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent and p not in found]
        found.update(kids)
        todo += kids
    groups = {p for p in found if procs.get(p, (0, 0))[1] == p}
    return found | {p for p, (_, pgrp) in procs.items() if pgrp in groups}


def _alive(pids) -> set[int]:
    return {p for p in pids if _stat(p) is not None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), BPSUITE_OFFLINE="1", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Output goes to a file: a pipe nobody reads could block the command, and a process left
    behind would hold a pipe open."""
    log = open(cwd / "bpsuite.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "suite", *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_until(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"bpsuite exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _terminate_and_check(proc: subprocess.Popen, seen: set[int],
                         statuses=(128 + signal.SIGTERM,)) -> None:
    seen |= _tree(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pid in _alive(seen):
            os.kill(pid, signal.SIGKILL)
        pytest.fail("bpsuite did not exit within 60 s of SIGTERM")
    deadline = time.monotonic() + 10  # a killed grandchild may need a moment to be reaped by init
    while _alive(seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _alive(seen)
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left after SIGTERM: {sorted(left)}"
    assert proc.returncode in statuses


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ui_server_and_its_workers_end_with_bpsuite_ui(tmp_path):
    port = _free_port()
    proc = _start(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}"],
                  tmp_path, _env())
    _wait_until(lambda: _listening(port), 180, "the MLflow server to listen", proc, tmp_path / "bpsuite.log")
    seen = _tree(proc.pid)
    assert seen, "the server runs in a child process"
    _terminate_and_check(proc, seen)
    assert not _listening(port)


def test_reproduce_terminated_mid_run_leaves_no_pool_worker(tmp_path, mnist_root):
    """Relies on `bpsuite`'s signal handling (suite/shutdown.py) ending the pool's workers and its
    fork server before the executor's own clean-up, which would wait for the running cells.
    Three seeds: the smoke grid of one seed can finish within the test's reaction time."""
    store = tmp_path / "mlruns.db"
    proc = _start(["reproduce", "summary", "--profile", "smoke", "--seeds", "3", "--jobs", "2", "--no-report",
                   "--tracking-uri", f"sqlite:///{store}"], tmp_path, _env(BPSUITE_DATA=str(mnist_root)))
    seen: set[int] = set()

    def pool_busy() -> bool:  # fork server + 2 workers (+ resource tracker), and a cell under way
        seen.update(_tree(proc.pid))
        return len(_alive(seen)) >= 3 and store.exists()

    _wait_until(pool_busy, 240, "the pool to start", proc, tmp_path / "bpsuite.log")
    time.sleep(2)  # mid-run: cells are training
    # `reproduce` may treat SIGTERM exactly like Ctrl-C (status 130) or report it as such (143)
    _terminate_and_check(proc, seen, statuses=(128 + signal.SIGINT, 128 + signal.SIGTERM))


@pytest.mark.parametrize("method, model, settings", [
    ("penalty", "resnet20", ["distributed=true", "stages=2"]),
    ("mgrit", "odenet:8-4", ["workers=2"]),
])
def test_run_terminated_mid_training_leaves_no_stage_or_chunk_worker(tmp_path, mnist_root, method, model, settings):
    """The layer-parallel methods' worker processes (spawned by the process that trains the cell)
    end with `bpsuite run`."""
    proc = _start(["run", method, model, "mnist", "--profile", "smoke", "--epochs", "50",
                   "--set", "threads=1", *[a for s in settings for a in ("--set", s)],
                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}"], tmp_path,
                  _env(BPSUITE_DATA=str(mnist_root)))
    seen: set[int] = set()

    def workers_up() -> bool:  # this command's python children: the spawned workers (+ tracker)
        seen.update(_tree(proc.pid))
        return len(_alive(seen)) >= 2

    _wait_until(workers_up, 240, "the worker processes to start", proc, tmp_path / "bpsuite.log")
    time.sleep(2)
    _terminate_and_check(proc, seen)
