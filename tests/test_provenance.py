"""Each run records the CPU model and torch's CPU capability beside the platform, and
results/PROVENANCE.md shows them for every distinct machine the runs came from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from suite.provenance import hardware
from suite.report.build import write_index


def _cpuinfo_model_name() -> str | None:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def test_hardware_names_the_cpu_model_and_the_kernels_instruction_set():
    info = hardware()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    expected = _cpuinfo_model_name()
    if expected is None:
        pytest.skip("no 'model name' in /proc/cpuinfo on this machine")
    assert info["cpu_model"] == expected


def test_provenance_lists_each_machine_with_cpu_model_and_capability(tmp_path):
    runs = pd.DataFrame({
        "git_commit": ["abc", "abc", "abc"],
        "hardware.platform": ["Linux-x86_64"] * 3,
        "hardware.cpu_model": ["CPU A", "CPU A", "CPU B"],
        "hardware.cpu_capability": ["AVX2", "AVX2", "AVX512"],
    })
    ctx = SimpleNamespace(name="summary", runs=runs, figures=[], verdicts=[])
    write_index([ctx], tmp_path / "results", tmp_path / "figs")
    text = (tmp_path / "results" / "PROVENANCE.md").read_text()
    machines = [line for line in text.splitlines() if line.startswith("- ") and "run(s)" in line]
    assert sorted(machines) == [
        "- 1 run(s): platform=Linux-x86_64, cpu_model=CPU B, cpu_capability=AVX512",
        "- 2 run(s): platform=Linux-x86_64, cpu_model=CPU A, cpu_capability=AVX2",
    ]
    here = hardware()
    assert f"cpu_model={here['cpu_model']}" in text and f"cpu_capability={here['cpu_capability']}" in text


def test_every_run_is_tagged_with_cpu_model_and_capability(tracker, mnist_root):
    from suite.config import Cell
    from suite.harness import run_cell

    result = run_cell(Cell("bp", "mlp", "mnist", 0, "smoke").with_overrides(threads=1), tracker)
    tags = tracker.client.get_run(result.run_id).data.tags
    here = hardware()
    assert tags["hardware.cpu_model"] == here["cpu_model"]
    assert tags["hardware.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tags["hardware.platform"] == here["platform"]


def test_reporting_one_experiment_keeps_the_others_in_the_shared_files(tmp_path):
    """`bpsuite report <experiment>` rewrites verdicts.md, the figure index and PROVENANCE.md: the
    experiments it did not report keep their rows (results/index.json), the reported one's are
    replaced, not duplicated."""
    def ctx(name, claim, verdict, commit):
        runs = pd.DataFrame({"git_commit": [commit], "hardware.cpu_model": ["CPU A"]})
        row = {"experiment": name, "claim": claim, "verdict": verdict}
        figure = {"file": f"{name}.png", "title": name, "kind": "measured", "reproduces": "-", "profile": "quick"}
        return SimpleNamespace(name=name, runs=runs, figures=[figure], verdicts=[row])

    results, figs = tmp_path / "results", tmp_path / "figs"
    write_index([ctx("summary", "claim S", "undecided", "c1")], results, figs)
    write_index([ctx("mgrit", "claim M", "reproduced", "c2")], results, figs)
    write_index([ctx("summary", "claim S", "not reproduced", "c3")], results, figs)
    verdicts = (results / "verdicts.md").read_text()
    table = [line for line in verdicts.splitlines() if line.startswith("| [")]
    assert any("claim M" in line for line in table) and sum("claim S" in line for line in table) == 1
    assert "not reproduced" in verdicts and "undecided" not in verdicts.split("Counts:")[1]
    assert "summary.png" in (figs / "README.md").read_text() and "mgrit.png" in (figs / "README.md").read_text()
    provenance = (results / "PROVENANCE.md").read_text()
    assert "Runs: 2;" in provenance and "`c2`" in provenance and "`c3`" in provenance and "`c1`" not in provenance
    assert "- 2 run(s): cpu_model=CPU A" in provenance
    front = (results / "README.md").read_text()  # the generated front page links every report and figure
    assert "Counts: " in front and "reproduced 1" in front and "not reproduced 1" in front and "(verdicts.md#1)" in front
    assert "| mgrit | 1 |" in front and "(../figs/mgrit.png)" in front
