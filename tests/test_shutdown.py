"""A terminated or killed `bpsuite` leaves no process behind: neither MLflow's server (and the
workers it forks) under `bpsuite ui`, nor the pool's workers and fork server under `bpsuite
reproduce`, nor the layer-parallel methods' stage and chunk workers under `bpsuite run`.

The process tree is read from /proc, independently of `suite.shutdown`'s own bookkeeping: every
process whose parent chain leads to the command, or that sits in a process group the command
started, must be gone after SIGTERM (which `bpsuite` handles: suite/shutdown.py ends its
descendants) and after SIGKILL (which it cannot: each child has the kernel signal it when its
parent dies, and a watchdog ends MLflow's server group)."""

from __future__ import annotations

import contextlib
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

# Only hangs fail: under `nox -s tests` another worker shares the 2 cores, and a loaded machine
# took over 60 s to see a pool of 2 training workers off (a clean exit, just late).
EXIT_WAIT_S = 180


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


# each test runs once per way of ending `bpsuite`: SIGTERM (it ends its descendants itself, then
# exits) and SIGKILL (it has no say: the kernel and the watchdog must end them)
ENDINGS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
GONE_WITHIN_S = 10  # after bpsuite's exit; a killed grandchild may also need a moment to be reaped


def _end_and_check(proc: subprocess.Popen, seen: set[int], sig: int,
                   statuses=(128 + signal.SIGTERM,)) -> None:
    """Send `sig` to bpsuite, wait for it to exit, then for every process in `seen` (and in its
    tree now) to go. Survivors are SIGKILLed whatever the outcome: the test never leaves any."""
    seen |= _tree(proc.pid)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pid in _alive(seen):
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"bpsuite did not exit within {EXIT_WAIT_S} s of {signal.Signals(sig).name}")
    start = time.monotonic()
    while _alive(seen) and time.monotonic() < start + GONE_WITHIN_S:
        time.sleep(0.05)
    took = time.monotonic() - start
    left = _alive(seen)
    for pid in left:  # never leave them behind, even when the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"{len(seen)} processes gone {took:.2f} s after bpsuite's exit on {signal.Signals(sig).name}")
    assert not left, f"processes left {GONE_WITHIN_S} s after {signal.Signals(sig).name}: {sorted(left)}"
    assert proc.returncode in (statuses if sig != signal.SIGKILL else (-signal.SIGKILL,))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@ENDINGS
def test_ui_server_and_its_workers_end_with_bpsuite_ui(tmp_path, tracker, sig):
    """Also MLflow's job runner and its huey consumers, which a SIGTERM to the server alone left
    running for 40 s and more. (`tracker` creates the store: `bpsuite ui` refuses a missing one.)"""
    port = _free_port()
    proc = _start(["ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}"],
                  tmp_path, _env())
    _wait_until(lambda: _listening(port), 180, "the MLflow server to listen", proc, tmp_path / "bpsuite.log")
    seen = _tree(proc.pid)
    assert seen, "the server runs in a child process"
    _end_and_check(proc, seen, sig)
    assert not _listening(port)


@ENDINGS
def test_reproduce_ended_mid_run_leaves_no_pool_worker(tmp_path, mnist_root, sig):
    """SIGTERM: `bpsuite`'s signal handling (suite/shutdown.py) ends the pool's workers and its
    fork server before the executor's own clean-up, which would wait for the running cells.
    SIGKILL: the fork server ends with `bpsuite`, the workers with the fork server, the resource
    tracker with the last of them.
    A grid of long cells (LeNet on 12,000 MNIST images for 8 epochs: far beyond the test's wait), so
    that a worker left running is still there when the test looks: a pool worker runs one cell and
    exits, and a smoke cell (or the MGRIT cells of `summary`, skipped on most models) ends by
    itself within seconds, taking its worker with it unnoticed."""
    store = tmp_path / "mlruns.db"
    proc = _start(["reproduce", "biotorch-mnist", "--profile", "quick", "--seeds", "1", "--jobs", "2", "--no-report",
                   "--tracking-uri", f"sqlite:///{store}"], tmp_path, _env(BPSUITE_DATA=str(mnist_root)))
    seen: set[int] = set()

    def pool_busy() -> bool:  # fork server + 2 workers (+ resource tracker), and a cell under way
        seen.update(_tree(proc.pid))
        return len(_alive(seen)) >= 3 and store.exists()

    _wait_until(pool_busy, 240, "the pool to start", proc, tmp_path / "bpsuite.log")
    time.sleep(2)  # mid-run: cells are training
    # `reproduce` may treat SIGTERM exactly like Ctrl-C (status 130) or report it as such (143)
    _end_and_check(proc, seen, sig, statuses=(128 + signal.SIGINT, 128 + signal.SIGTERM))


@ENDINGS
@pytest.mark.parametrize("method, model, settings", [
    ("penalty", "resnet20", ["distributed=true", "stages=2"]),
    ("mgrit", "odenet:8-4", ["workers=2"]),
])
def test_run_ended_mid_training_leaves_no_stage_or_chunk_worker(tmp_path, mnist_root, method, model, settings,
                                                                sig):
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
    _end_and_check(proc, seen, sig)
