"""Reads runs back from MLflow and writes tables to results/ and figures to paper_figures/.
It never trains."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from suite.config import resolve
from suite.report.context import ReportContext, overrides_columns, set_style
from suite.tracking import Tracker


def experiment_runs(tracker: Tracker, experiment, profile: str, seeds: int) -> pd.DataFrame:
    """The complete run of each cell of the experiment's grid (one row per cell)."""
    hashes = {resolve(cell).cell_hash for cell in experiment.cells(profile, seeds)}
    runs = tracker.runs_frame(sorted(hashes))
    if runs.empty:
        return runs
    runs = runs[runs["status"].isin(["finished", "skipped", "diverged"])]
    runs = runs.drop_duplicates("cell_hash")  # at most one complete run per cell by construction
    runs = overrides_columns(runs.reset_index(drop=True))
    runs["seed"] = runs["seed"].astype(int)
    return runs


def build_report(experiments, profile: str, tracker: Tracker, seeds: int = 1,
                 results_dir: Path = Path("results"), figures_dir: Path = Path("paper_figures")) -> list[ReportContext]:
    set_style()
    done = []
    for exp in experiments:
        if exp.report is None:
            continue
        ctx = ReportContext(exp, profile, tracker, experiment_runs(tracker, exp, profile, seeds),
                            Path(results_dir), Path(figures_dir))
        exp.report(ctx)
        done.append(ctx)
    return done
