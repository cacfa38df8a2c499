"""Every registered experiment runs its smoke grid and writes its tables and figures."""

from __future__ import annotations

import pytest

from suite.config import resolve
from suite.executors import run_cells
from suite.experiments import EXPERIMENTS
from suite.report.build import build_report, write_index
from suite.report.figures import figure_problems


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_smoke_grid_produces_its_outputs(name, tmp_path, mnist_root, monkeypatch, saved):
    monkeypatch.chdir(tmp_path)
    exp = EXPERIMENTS[name]
    cells = exp.cells("smoke")
    assert cells, "every experiment has a smoke grid"
    for cell in cells:
        resolve(cell)  # every cell of every profile resolves (names, keys and ranges valid)
    for profile in exp.profiles:
        for cell in exp.cells(profile):
            resolve(cell)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    results = run_cells(cells, uri, progress=False)
    failed = [(r.cell.label, r.reason) for r in results if r.status == "failed"]
    assert not failed, failed
    from suite.tracking import Tracker
    contexts = build_report([exp], "smoke", Tracker(uri), results_dir=tmp_path / "results",
                            figures_dir=tmp_path / "figures")
    write_index(contexts, tmp_path / "results", tmp_path / "figures")
    written = contexts[0].written
    assert any(p.name.startswith(name) and p.suffix == ".md" for p in written)
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    for figure in contexts[0].figures:
        assert figure["kind"] in ("measured", "modelled")
    # every figure by the rules of suite/report/figures.py: one legend, the palette, nothing off the canvas
    problems = {fig._suptitle.get_text()[:50] if fig._suptitle else "?": figure_problems(fig) for fig in saved}
    assert not any(problems.values()), problems
