"""Paths from the environment and the command line are made absolute once, at start-up, so a
relative data root or store means the same from any directory and in every worker process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from suite.cli import absolute_paths, build_parser
from suite.data import default_root
from suite.tracking import absolute_uri

REPO = Path(__file__).resolve().parents[1]


def test_sqlite_uris_become_absolute_and_others_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///runs/mlruns.db") == f"sqlite:///{tmp_path.resolve()}/runs/mlruns.db"
    assert absolute_uri("sqlite:////abs/mlruns.db") == "sqlite:////abs/mlruns.db"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert absolute_uri("sqlite:///:memory:") == "sqlite:///:memory:"


def test_command_line_and_environment_paths_are_resolved_once(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("BPSUITE_DATA", "../data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///store.db")
    args = build_parser().parse_args(["reproduce", "--data-root", "../d2", "--results-dir", "out",
                                      "--figures-dir", "figs", "--tracking-uri", "sqlite:///x.db"])
    absolute_paths(args)
    here = tmp_path.resolve() / "a"
    assert (args.data_root, args.results_dir, args.figures_dir) == (
        str(tmp_path.resolve() / "d2"), str(here / "out"), str(here / "figs"))
    assert args.tracking_uri == f"sqlite:///{here / 'x.db'}"
    assert os.environ["BPSUITE_DATA"] == str(tmp_path.resolve() / "data")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{here / 'store.db'}"
    monkeypatch.chdir(REPO)  # later changes of directory no longer move them
    assert default_root() == tmp_path.resolve() / "data"


def test_a_relative_data_root_works_from_another_directory(tmp_path, mnist_root):
    """`bpsuite run` started in a directory of its own with BPSUITE_DATA relative to that directory."""
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    relative = os.path.relpath(mnist_root.resolve(), work)
    env = dict(os.environ, BPSUITE_DATA=relative, BPSUITE_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "suite", "run", "bp", "mlp", "mnist", "--profile", "smoke",
                           "--set", "threads=1", "--tracking-uri", "sqlite:///mlruns.db"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished" in done.stdout
    assert (work / "mlruns.db").exists()
