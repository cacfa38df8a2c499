"""The complete runs of an experiment's grid, read back from the store (the report driver and
the experiments that compare against another grid's runs both use it)."""

from __future__ import annotations

import pandas as pd

from suite.config import resolve
from suite.report.context import overrides_columns
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
    if "status_reason" not in runs:
        runs["status_reason"] = ""
    return runs
