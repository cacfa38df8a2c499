"""`reproduce --jobs 2` vs `--jobs 1` on the same quick-profile grid, wall clock side by side.

The grid: BP on the `quick` profile's small MNIST models, 4 cells (2 models × 2 seeds), two epochs
on 6000 samples each; each run gets a fresh tracking store so nothing is cached. Each worker pays
for its own start-up (imports, data), which the ratio includes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.common import report_ratio

REPO = Path(__file__).resolve().parents[1]
DRIVER = textwrap.dedent("""
    import sys
    from suite.cli import main
    from suite.config import Cell
    from suite.experiments import EXPERIMENTS, Experiment
    over = dict(epochs=2, train_subset=6000, test_subset=1000, measure_flops="false")
    cells = [Cell("bp", m, "mnist", s, "quick").with_overrides(**over) for m in ("cnn", "resnet20") for s in (0, 1)]
    EXPERIMENTS["bench-grid"] = Experiment("bench-grid", "bench", "bench", lambda p, s: cells)
    if __name__ == "__main__":  # the pool's spawned workers import this file too
        sys.exit(main(["reproduce", "bench-grid", "--no-report"] + sys.argv[1:]))
""")


def reproduce_seconds(jobs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "driver.py"
        script.write_text(DRIVER)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(script), "--jobs", str(jobs)], cwd=tmp, check=True,
                       env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    one, two = reproduce_seconds(1), reproduce_seconds(2)
    print(f"  reproduce --jobs 1: {one:.1f} s, --jobs 2: {two:.1f} s (4 cells)")
    report_ratio("reproduce time --jobs 1 / --jobs 2 (same grid)", one / two, "> 1", one / two > 1)


if __name__ == "__main__":
    main()
