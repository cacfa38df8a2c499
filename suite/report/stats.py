"""Statistics over seeds: mean ± 95% confidence interval (Student t) and Welch's test vs a baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the t confidence interval, n). With one value the half-width is nan."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value; nan when either side has fewer than two values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def fmt_ci(mean: float, half: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def summarise(frame: pd.DataFrame, by: list[str], metric: str, scale: float = 1.0, digits: int = 2) -> pd.DataFrame:
    """One row per group: mean, ci95, n and a formatted 'mean ± ci' string of `metric`."""
    rows = []
    for key, group in frame.groupby(by, sort=False, dropna=False):
        mean, half, n = mean_ci(pd.to_numeric(group[metric], errors="coerce"))
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(by, key)) | {"mean": mean, "ci95": half, "n": n,
                                          "text": fmt_ci(mean, half, scale, digits)})
    return pd.DataFrame(rows)


def spearman_ci(x, y, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Spearman's ρ with a confidence interval from the Fisher z transform, using the
    Fieller–Hartley–Pearson standard error 1.03/√(n−3) for rank correlations. Returns (ρ, low,
    high, n); the interval is nan below 4 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 3:
        return math.nan, math.nan, math.nan, n
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 4 or abs(rho) >= 1:
        return rho, (rho if abs(rho) >= 1 else math.nan), (rho if abs(rho) >= 1 else math.nan), n
    half = stats.norm.ppf(0.5 + confidence / 2) * 1.03 / math.sqrt(n - 3)
    z = math.atanh(rho)
    return rho, math.tanh(z - half), math.tanh(z + half), n
