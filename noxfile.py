"""Sessions: tests, reproduce, figures, ui, bench, lint.

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


def suite_env(session: nox.Session) -> None:
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(ENV), external=True)
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e",
                f"{ROOT}[dev]", external=True)


def data_env() -> dict[str, str]:
    """$BPSUITE_DATA if set; else a sibling `shared/data` checkout (this project's CI layout); else
    the suite's own default, ./data."""
    if os.environ.get("BPSUITE_DATA"):
        return {}
    shared = ROOT.parent / "shared" / "data"
    return {"BPSUITE_DATA": str(shared)} if shared.is_dir() else {}


def run(session: nox.Session, *args: str) -> None:
    session.run(str(BIN / args[0]), *args[1:], external=True, env=data_env())


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite (offline; MNIST from $BPSUITE_DATA, else ../shared/data)."""
    suite_env(session)
    run(session, "python", "-m", "pytest", *(session.posargs or ["tests"]))


@nox.session(venv_backend="none")
def reproduce(session: nox.Session) -> None:
    """Train the grids (default: every experiment, quick profile), then write results/ and paper_figures/.
    Arguments go to `bpsuite reproduce`, e.g. `nox -s reproduce -- --profile smoke`."""
    suite_env(session)
    run(session, "bpsuite", "reproduce", *session.posargs)


@nox.session(venv_backend="none")
def figures(session: nox.Session) -> None:
    """Regenerate tables and figures from the logged runs (no training)."""
    suite_env(session)
    run(session, "bpsuite", "report", *session.posargs)


@nox.session(venv_backend="none")
def ui(session: nox.Session) -> None:
    """MLflow UI on http://127.0.0.1:5000 over the runs in ./mlruns.db."""
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
    run(session, "ruff", "check", "suite", "tests", "benchmarks", "noxfile.py")
