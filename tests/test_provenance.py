"""Each run records the CPU model and torch's CPU capability beside the platform, and
results/PROVENANCE.md shows them for every distinct machine the runs came from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from suite.provenance import hardware
from suite.report import write_index


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
    ctx = SimpleNamespace(runs=runs, figures=[], verdicts=[])
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
