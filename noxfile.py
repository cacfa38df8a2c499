"""Sessions: tests, reproduce, tune, figures, ui, bench, lint.

All sessions share one virtual environment, `.nox/suite` (torch alone is several GB; one copy is
enough). It is created on first use and `pip install -e .[dev]` keeps it in step with
pyproject.toml on every call (a no-op when nothing changed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
ROOT = Path(__file__).parent
ENV = ROOT / ".nox" / "suite"
BIN = ENV / ("Scripts" if os.name == "nt" else "bin")
# The committed MLflow store behind results/ and paper_figures/ (and the tuning studies beside it):
# `nox -s figures` rebuilds every table from it without training; `nox -s reproduce -- --tracking-uri
# sqlite:///results/mlruns.db` resumes its grid instead of starting over.
COMMITTED_STORE = f"sqlite:///{ROOT / 'results' / 'mlruns.db'}"
COMMITTED_SEEDS = "3"
PEER = "biotorch==0.0.16"  # jsalbert/biotorch, installed without its dependencies (see suite_env)


def suite_env(session: nox.Session) -> None:
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e",
                f"{ROOT}[dev]", external=True)
    # The peer library the side-by-side test and benchmark run (tests/test_biotorch_peer.py,
    # benchmarks/biotorch.py). --no-deps: it declares jupyter, tensorboard and torchattacks, none of
    # which importing its models needs, and must not move torch. Without a network and without a
    # copy it stays absent, and those checks skip.
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                PEER, external=True, success_codes=[0, 1])


def data_env() -> dict[str, str]:
    """$BPSUITE_DATA if set (made absolute against the directory nox was started from: nox itself
    moves to the noxfile's directory); else a sibling `shared/data` checkout (this project's CI
    layout); else the suite's own default, ./data."""
    if os.environ.get("BPSUITE_DATA"):
        started_in = Path(os.environ.get("PWD") or os.getcwd())
        return {"BPSUITE_DATA": str((started_in / os.path.expanduser(os.environ["BPSUITE_DATA"])).resolve())}
    shared = ROOT.parent / "shared" / "data"
    return {"BPSUITE_DATA": str(shared)} if shared.is_dir() else {}


def run(session: nox.Session, *args: str) -> None:
    session.run(str(BIN / args[0]), *args[1:], external=True, env=data_env())


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (offline; MNIST from $BPSUITE_DATA, else ../shared/data), in parallel over
    $BPSUITE_TEST_WORKERS workers (default: one per CPU core; every run uses one intra-op thread)."""
    suite_env(session)
    workers = os.environ.get("BPSUITE_TEST_WORKERS", "auto")
    run(session, "python", "-m", "pytest", "-n", workers, *(session.posargs or ["tests"]))


@nox.session(venv_backend="none")
def reproduce(session: nox.Session) -> None:
    """Train the grids (default: every experiment, quick profile), then write results/ and paper_figures/.
    Arguments go to `bpsuite reproduce`, e.g. `nox -s reproduce -- --profile smoke`."""
    suite_env(session)
    run(session, "bpsuite", "reproduce", *session.posargs)


@nox.session(venv_backend="none")
def tune(session: nox.Session) -> None:
    """Tune every method of the `summary` cells on the quick profile with the same budget (8 trials each,
    seed 0) and write baselines/tuned-settings.json and results/tuning-summary.md. `reproduce` never
    tunes; it uses the committed settings. Arguments go to `bpsuite tune`."""
    suite_env(session)
    run(session, "bpsuite", "tune", *session.posargs)


@nox.session(venv_backend="none")
def figures(session: nox.Session) -> None:
    """Regenerate tables and figures from the logged runs (no training); by default from the
    committed store, results/mlruns.db, over the committed seeds."""
    suite_env(session)
    args = list(session.posargs)
    if "--tracking-uri" not in args:
        args += ["--tracking-uri", COMMITTED_STORE]
    if "--seeds" not in args:
        args += ["--seeds", COMMITTED_SEEDS]
    if "--profile" not in args:  # each experiment at its highest complete profile (paper where it was run)
        args += ["--profile", "best"]
    run(session, "bpsuite", "report", *args)


@nox.session(venv_backend="none")
def ui(session: nox.Session) -> None:
    """MLflow UI on http://127.0.0.1:5000 over the repository's ./mlruns.db (what `nox -s reproduce`
    writes) when it exists, else the committed runs, results/mlruns.db; `bpsuite ui` prints the store it
    serves. `nox -s ui -- --tracking-uri sqlite:///PATH` for another store."""
    suite_env(session)
    run(session, "bpsuite", "ui", *session.posargs)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Speed benchmarks: every ratio measured side by side in one run."""
    suite_env(session)
    run(session, "python", "-m", "benchmarks.run", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    suite_env(session)
    run(session, "ruff", "check", "suite", "tests", "benchmarks", "diagnostics", "noxfile.py")
