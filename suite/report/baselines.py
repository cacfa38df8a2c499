"""Published numbers (`baselines/published.csv`) and the verdict of a reproduction against them.

A row holds: key, value, metric, method, model, dataset, source, verified (yes/no), tolerance
(absolute, in the metric's unit; empty when no verdict is meaningful), notes. A paper's table
that is not available is a row with an empty value that says so in `notes`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

BASELINES = Path(__file__).resolve().parents[2] / "baselines" / "published.csv"


def load_published(path: Path = BASELINES) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"verified": str, "notes": str})
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["tolerance"] = pd.to_numeric(frame["tolerance"], errors="coerce")
    return frame


def verdict(published: float | None, reproduced: float | None, tolerance: float | None) -> str:
    """'within tolerance' if |reproduced − published| <= tolerance; 'outside tolerance' otherwise;
    'no published value' when there is nothing (or no tolerance) to compare with."""
    if published is None or tolerance is None or any(
            isinstance(v, float) and math.isnan(v) for v in (published, tolerance)):
        return "no published value"
    if reproduced is None or (isinstance(reproduced, float) and math.isnan(reproduced)):
        return "outside tolerance"
    return "within tolerance" if abs(reproduced - published) <= tolerance else "outside tolerance"


def published_for(key: str, frame: pd.DataFrame | None = None) -> pd.Series | None:
    frame = load_published() if frame is None else frame
    rows = frame[frame.key == key]
    return rows.iloc[0] if len(rows) else None
