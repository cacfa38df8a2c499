"""Nothing lost, nothing half-done: bad stores, paths and URIs are exit-2 errors before any compute
that create and change nothing; a report never replaces tables with emptier ones unless forced;
a full disk or a read-only store is a message, not a traceback, and leaves the store as it was."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from suite.cli import main
from suite.config import Cell, resolve

REPO = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its content hash: "nothing created or changed" is checked
    against this, before and after."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(tracker, cell: Cell, acc: float) -> None:
    cfg = resolve(cell)
    handle = tracker.claim(cfg.cell_hash, {"method": cell.method, "model": cell.model, "dataset": cell.dataset,
                                           "seed": str(cell.seed), "profile": cell.profile, "overrides": "{}",
                                           "git_commit": "abc"}, cell.label)
    handle.log_params({"train.epochs": "1", "train.threads": "1"})
    handle.log_metrics({"test_acc": acc, "epoch_time": 1.0, "train_time": 1.0, "train_loss": 0.5}, step=0)
    handle.finish("finished")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """An MLflow store with the `summary` smoke grid on the MLP (fake runs), one with only BP's
    runs of it, one with no runs, an Optuna storage, and files that are not stores."""
    from suite.experiments import EXPERIMENTS, summary
    from suite.tracking import Tracker

    base = tmp_path_factory.mktemp("stores")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(summary.GRIDS, "smoke", (["mlp"], ["mnist"]))
        cells = EXPERIMENTS["summary"].cells("smoke")
    full, bp_only = Tracker(f"sqlite:///{base / 'full.db'}"), Tracker(f"sqlite:///{base / 'bp.db'}")
    for cell in cells:
        _fake_run(full, cell, 0.8)
        if cell.method == "bp":
            _fake_run(bp_only, cell, 0.8)
    Tracker(f"sqlite:///{base / 'empty.db'}")
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{base / 'optuna.db'}", study_name="s")
    (base / "garbage.db").write_bytes(b"this is not a database at all" * 100)
    whole = (base / "full.db").read_bytes()
    (base / "truncated.db").write_bytes(whole[: len(whole) // 3])
    (base / "a-file").write_text("x")
    (base / "tuned").mkdir()  # a tuning table of 100 studies
    pd.DataFrame({"method": ["bp"] * 100}).to_csv(base / "tuned" / "tuning-summary.csv", index=False)
    return {"dir": base, "cells": cells}


def _uri(stores, name: str) -> str:
    return f"sqlite:///{stores['dir'] / name}"


BAD = [  # (argv builder, message fragment); every one exits 2 and changes nothing
    ("report-typo", lambda s: ["report", "--tracking-uri", _uri(s, "typo.db")], r"no MLflow store at .*typo\.db"),
    ("report-optuna", lambda s: ["report", "--tracking-uri", _uri(s, "optuna.db")],
     r"not an MLflow store \(an Optuna storage\)"),
    ("report-garbage", lambda s: ["report", "--tracking-uri", _uri(s, "garbage.db")], r"is not an SQLite database"),
    ("report-truncated", lambda s: ["report", "--tracking-uri", _uri(s, "truncated.db")], r"damaged SQLite"),
    ("report-no-runs", lambda s: ["report", "summary", "--tracking-uri", _uri(s, "empty.db")],
     r"holds no complete runs of summary"),
    ("run-garbage", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", _uri(s, "garbage.db")],
     r"is not an SQLite database"),
    ("run-truncated", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", _uri(s, "truncated.db")],
     r"damaged SQLite"),
    ("run-optuna", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", _uri(s, "optuna.db")],
     r"not an MLflow store"),
    ("run-scheme", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", "foo://bar"], r"unsupported scheme"),
    ("run-two-slashes", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", "sqlite://mlruns.db"],
     r"three slashes"),
    ("run-memory", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", "sqlite:///:memory:"], r"names no file"),
    ("run-parent-is-file", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", _uri(s, "a-file/mlruns.db")],
     r"is a file, not a directory"),
    ("run-parent-missing", lambda s: ["run", "bp", "mlp", "mnist", "--tracking-uri", _uri(s, "no/such/m.db")],
     r"does not exist"),
    ("executor-unknown", lambda s: ["reproduce", "summary", "--profile", "smoke", "--executor", "nope"],
     r"unknown executor 'nope'"),
    ("executor-slurm", lambda s: ["reproduce", "summary", "--profile", "smoke", "--executor", "slurm"],
     r"needs Slurm's `sbatch`"),
    ("results-dir-file", lambda s: ["reproduce", "summary", "--profile", "smoke", "--results-dir",
                                    str(s["dir"] / "a-file")], r"--results-dir .* is a file"),
    ("figures-dir-under-file", lambda s: ["report", "--tracking-uri", _uri(s, "full.db"), "--figures-dir",
                                          str(s["dir"] / "a-file" / "figs")], r"--figures-dir .* is a file"),
    ("tune-storage-scheme", lambda s: ["tune", "--profile", "smoke", "--storage", "foo://"], r"unsupported scheme"),
    ("tune-storage-mlflow", lambda s: ["tune", "--profile", "smoke", "--storage", _uri(s, "full.db")],
     r"not an Optuna storage \(an MLflow store\)"),
    ("tune-settings-dir", lambda s: ["tune", "--profile", "smoke", "--settings-file", str(s["dir"])],
     r"--settings-file .* is a directory"),
    ("tune-settings-not-json", lambda s: ["tune", "--profile", "smoke", "--settings-file", str(s["dir"] / "a-file")],
     r"not valid JSON"),
    ("tune-fewer-studies", lambda s: ["tune", "--profile", "smoke", "--methods", "bp", "--models", "mlp",
                                      "--results-dir", str(s["dir"] / "tuned")], r"plans 1 studies.*holds 100"),
    ("ui-port", lambda s: ["ui", "--port", "99999", "--tracking-uri", _uri(s, "full.db")], r"port 99999"),
    ("ui-typo", lambda s: ["ui", "--tracking-uri", _uri(s, "typo.db")], r"no MLflow store"),
    ("migrate-typo", lambda s: ["migrate", "--tracking-uri", _uri(s, "typo.db")], r"no MLflow store"),
]


@pytest.mark.parametrize("name,argv,message", BAD, ids=[b[0] for b in BAD])
def test_bad_store_path_or_uri_exits_2_and_changes_nothing(name, argv, message, stores, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    before = _digest(stores["dir"])
    assert main(argv(stores)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert _digest(stores["dir"]) == before, "a store or file was created or changed"
    assert list(tmp_path.iterdir()) == [], "something was created in the working directory"


def _report(stores, store: str, results: Path, *extra: str) -> int:
    from suite.experiments import summary
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(summary.GRIDS, "smoke", (["mlp"], ["mnist"]))
        return main(["report", "summary", "--profile", "smoke", "--tracking-uri", _uri(stores, store),
                     "--results-dir", str(results), "--figures-dir", str(results / "figures"), *extra])


def test_report_never_replaces_tables_with_fewer_runs_unless_forced(stores, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    store_before = _digest(stores["dir"])
    assert _report(stores, "full.db", results) == 0
    n_cells = len(stores["cells"])
    assert pd.read_csv(results / "summary.csv")["method"].nunique() == n_cells
    written = _digest(results)
    capsys.readouterr()

    assert _report(stores, "bp.db", results) == 2  # a store with BP's run only
    err = capsys.readouterr().err
    assert f"summary: 1 run(s), the tables hold {n_cells}" in err and "--force" in err
    assert _digest(results) == written, "refused, yet the tables changed"

    assert _report(stores, "bp.db", results, "--force") == 0
    assert list(pd.read_csv(results / "summary.csv")["method"]) == ["bp"]
    assert _digest(stores["dir"]) == store_before, "a report wrote to the store it read"


def test_reproduce_refuses_before_compute_when_its_report_would_shrink_the_tables(stores, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "index.json").write_text('{"summary": {"runs": 100000}}')
    assert main(["reproduce", "summary", "--profile", "smoke", "--results-dir", str(results)]) == 2
    assert "fewer runs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["index.json", "results"]  # no store, no run


def test_a_failed_figure_or_table_write_leaves_the_old_file(tmp_path):
    from suite.atomic import replacing, write_text
    target = write_text(tmp_path / "table.md", "old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_resume_recognises_cached_cells_without_starting_a_worker(stores, tmp_path, monkeypatch, capsys):
    """Every cell complete: `reproduce` says so and runs nothing (no executor is called)."""
    import suite.cli
    from suite.experiments import summary

    store = tmp_path / "m.db"
    shutil.copy(stores["dir"] / "full.db", store)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(summary.GRIDS, "smoke", (["mlp"], ["mnist"]))
    monkeypatch.setattr(suite.cli, "validate_grid", lambda cells, root: None)  # fake runs: no data needed

    def no_executor(*a, **k):
        raise AssertionError("an executor was started for cached cells")

    monkeypatch.setattr("suite.executors.run_cells", no_executor)
    assert main(["reproduce", "summary", "--profile", "smoke", "--no-report", "--tracking-uri",
                 f"sqlite:///{store}"]) == 0
    out = capsys.readouterr().out
    n = len(stores["cells"])
    assert f"{n} of {n} cell(s) already complete" in out and f"cached {n}" in out


# -- faults: a full disk (a file-size limit) and a read-only file system ------------------------------

def _bpsuite(args: list[str], cwd: Path, fsize: int | None = None, wrap: list[str] | None = None):
    def limit():
        if fsize is not None:  # writes past the limit fail with EFBIG instead of killing the process
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = dict(os.environ, PYTHONPATH=str(REPO), BPSUITE_OFFLINE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [*(wrap or []), sys.executable, "-m", "suite", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=limit, timeout=300)


def _runs(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(db.execute("SELECT run_uuid, status FROM runs").fetchall())


def test_full_disk_creating_a_store_is_a_message_and_leaves_no_half_store(tmp_path, mnist_root):
    out = _bpsuite(["run", "bp", "mlp", "mnist", "--profile", "smoke"], tmp_path, fsize=64 * 1024)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "bpsuite: error:" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "mlruns.db").exists()


def test_full_disk_during_a_run_is_a_message_and_keeps_the_runs_logged_before(stores, tmp_path, mnist_root):
    store = tmp_path / "mlruns.db"
    shutil.copy(stores["dir"] / "full.db", store)
    before = _runs(store)
    # a little room: the claim fits, the run's params and per-epoch metrics soon do not
    out = _bpsuite(["run", "bp", "mlp", "mnist", "--profile", "smoke", "--epochs", "3"], tmp_path,
                   fsize=store.stat().st_size + 4096)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "bpsuite: error:" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    after = _runs(store)
    assert set(before) <= set(after), "a run logged before the fault was lost or changed"
    assert len(after) - len(before) <= 1  # at most the cut-short claim, which a rerun marks killed


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a read-only bind mount")
def test_read_only_file_system_is_a_message_before_compute(stores, tmp_path, mnist_root):
    shutil.copy(stores["dir"] / "full.db", tmp_path / "mlruns.db")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("this machine does not allow a private mount namespace")
    before = _digest(tmp_path)
    mount = ["unshare", "--mount", "sh", "-c", f'mount --bind -o ro "{tmp_path}" "{tmp_path}" && exec "$@"', "sh"]
    for args in (["run", "bp", "mlp", "mnist", "--profile", "smoke"],  # the store in a read-only folder
                 ["run", "bp", "mlp", "mnist", "--profile", "smoke", "--tracking-uri",
                  f"sqlite:///{tmp_path / 'new.db'}"]):
        out = _bpsuite(args, tmp_path, wrap=mount)
        assert out.returncode == 2, out.stderr[-2000:]
        assert re.search(r"cannot write in|read-only", out.stderr) and "Traceback" not in out.stderr
    assert _digest(tmp_path) == before


def test_a_store_locked_past_the_retries_is_a_store_error_after_a_bounded_number_of_tries(monkeypatch):
    from suite import tracking
    from suite.errors import StoreError
    from suite.store import store_problem

    calls = []
    monkeypatch.setattr(tracking.time, "sleep", lambda s: calls.append(s))

    def locked():
        raise RuntimeError("(sqlite3.OperationalError) database is locked")

    with pytest.raises(StoreError) as info:
        tracking._retry(locked)
    assert len(calls) == tracking.RETRY_ATTEMPTS - 1  # a sleep between tries, none after the last
    assert "locked" in store_problem(info.value)
    answers = iter([RuntimeError("database is locked"), "ok"])

    def locked_once():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert tracking._retry(locked_once) == "ok"  # a transient lock is waited out


def test_a_read_only_store_file_is_a_message_before_compute(stores, tmp_path, monkeypatch, capsys, mnist_root):
    store = tmp_path / "mlruns.db"
    shutil.copy(stores["dir"] / "full.db", store)
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode:
        pytest.skip("chattr +i is not allowed here (needed to make a file read-only for root)")
    try:
        before = _digest(tmp_path)
        monkeypatch.chdir(tmp_path)
        assert main(["run", "bp", "mlp", "mnist", "--profile", "smoke"]) == 2
        assert "is read-only" in capsys.readouterr().err
        assert _digest(tmp_path) == before
    finally:
        subprocess.run(["chattr", "-i", str(store)])


def test_ui_serves_the_local_store_else_the_committed_runs(tmp_path, monkeypatch):
    from suite.cli import COMMITTED_STORE, ui_store
    from suite.tracking import default_uri

    monkeypatch.chdir(tmp_path)
    local = default_uri()
    assert ui_store(local) == f"sqlite:///{COMMITTED_STORE}" and COMMITTED_STORE == REPO / "results" / "mlruns.db"
    assert list(tmp_path.iterdir()) == []  # no empty store made
    (tmp_path / "mlruns.db").write_bytes(b"")
    assert ui_store(local) == local
