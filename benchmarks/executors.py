"""`reproduce --jobs 2` vs `--jobs 1` on the same quick-profile grid, wall clock side by side.

The grid is the whole `quick` profile (the issue's target: "a reproduce with --jobs 2 finishes
the quick profile faster than --jobs 1"), about 13 minutes per run on 2 cores, so this benchmark
takes about 25 minutes. `BPSUITE_BENCH_JOBS_STRIDE=8` times a deterministic sample instead, every
8th cell of every registered experiment's quick grid (in registry order), for a quick look; a
sample over-weights the few multi-process cells, which run alone in both modes. Each run gets a
fresh tracking store, so nothing is cached, and pays for its own start-up (imports, data) and
its report-free end, which the ratio includes.

Every run fixes its own intra-op thread count (the run setting `threads`, 1 by default), so
`--jobs` changes only how many cells run at once, never what they compute: the benchmark also
checks that both runs logged bitwise-identical final accuracies and losses. With one thread per
cell, `--jobs 1` leaves the second core idle and `--jobs 2` can approach 2×, less what two
concurrent cells cost each other through shared memory bandwidth (≈ 13% here), the workers'
start-up (overlapped with grid validation by the fork server), and the grid's tail (the
multi-process cells run alone, after the others).
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
    import os
    STRIDE = int(os.environ["BENCH_STRIDE"])  # the pool's spawned workers see the same environment
    cells = [c for e in list(EXPERIMENTS.values()) for c in e.cells("quick")][::STRIDE]
    EXPERIMENTS["bench-grid"] = Experiment("bench-grid", "bench", "bench", lambda p, s: cells)
    if __name__ == "__main__":  # the pool's spawned workers import this file too
        sys.exit(main(["reproduce", "bench-grid", "--no-report"] + sys.argv[1:]))
""")


STRIDE = int(os.environ.get("BPSUITE_BENCH_JOBS_STRIDE", "1"))


def reproduce_seconds(jobs: int, stride: int = STRIDE) -> tuple[float, dict[str, tuple]]:
    """Wall time of the run, and each cell's (status, final test accuracy, final train loss)."""
    from suite.tracking import Tracker

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "driver.py"
        script.write_text(DRIVER)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, str(script), "--jobs", str(jobs)], cwd=tmp, capture_output=True,
                              env=os.environ | {"PYTHONPATH": str(REPO), "BENCH_STRIDE": str(stride)}, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode:
            raise RuntimeError(f"reproduce --jobs {jobs} failed:\n{done.stderr[-3000:]}")
        runs = Tracker(f"sqlite:///{Path(tmp) / 'mlruns.db'}").runs_frame()
        def value(row, key):  # NaN (a skipped cell's missing metric) as None, so equal finals compare equal
            v = row.get(key)
            return None if v is None or v != v else v
        finals = {row["cell_hash"]: (row["status"], value(row, "m.test_acc"), value(row, "m.train_loss"))
                  for row in runs.to_dict("records")} if len(runs) else {}
        return seconds, finals


def main() -> None:
    from suite.experiments import EXPERIMENTS

    n = len([c for e in EXPERIMENTS.values() for c in e.cells("quick")][::STRIDE])
    (one, finals_one), (two, finals_two) = reproduce_seconds(1), reproduce_seconds(2)
    grid = "the whole quick profile" if STRIDE == 1 else f"every {STRIDE}th cell of the quick profile"
    print(f"  reproduce --jobs 1: {one:.1f} s, --jobs 2: {two:.1f} s ({n} cells: {grid})")
    same = finals_one == finals_two and len(finals_one) > 0
    print(f"  identical status, final test accuracy and train loss in every cell: {'yes' if same else 'NO'} "
          f"({len(finals_one)} cells)")
    report_ratio("reproduce time --jobs 1 / --jobs 2 (same grid)", one / two, "> 1", one / two > 1 and same)


if __name__ == "__main__":
    main()
