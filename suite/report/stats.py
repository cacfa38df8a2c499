"""Statistics over seeds: mean ± 95% confidence interval (Student t) and Welch's test vs a baseline.

An accuracy's interval is bounded to its scale ([0, 100] %): where one collapsed seed stretches the
t interval past it, `fmt_bounded` prints the percentile-bootstrap interval of `bounded_ci`
instead ('30.18 [0.99, 59.62]'), which never leaves the seeds' own range."""

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


def bounded_ci(values, confidence: float = 0.95, bounds: tuple[float, float] = (0.0, 100.0),
               resamples: int = 4000) -> tuple[float, float, float, int]:
    """(mean, low, high, n): the percentile-bootstrap interval of the mean over the values
    (seeds), which lies within the values' own range and so within `bounds` (accuracy: [0, 100]);
    clipped to `bounds` all the same. Deterministic (a fixed generator). With one value low =
    high = the value; with none, nan."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n == 1 or np.all(x == x[0]):
        return float(x.mean()), float(x[0]), float(x[0]), n
    means = x[np.random.default_rng(0).integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    low, high = max(bounds[0], float(low)), min(bounds[1], float(high))
    return float(x.mean()), low, high, n


def fmt_bounded(values, digits: int = 2, bounds: tuple[float, float] = (0.0, 100.0), confidence: float = 0.95) -> str:
    """An accuracy (in %) over seeds as text: 'mean ± t-CI' where the t interval lies within
    `bounds`; otherwise (a collapsed seed stretches it past the scale) 'mean [low, high]', the
    bounded bootstrap interval of `bounded_ci`, never ± more than the scale."""
    mean, half, n = mean_ci(values, confidence)
    if n == 0:
        return "–"
    if math.isnan(half) or (bounds[0] <= mean - half and mean + half <= bounds[1]):
        return fmt_ci(mean, half, 1.0, digits)
    _, low, high, _ = bounded_ci(values, confidence, bounds)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_diff(diff: float, half: float, digits: int = 2, bound: float = 100.0, per_seed=None) -> str:
    """A difference of accuracies (points) with its CI: '+d ± h' where the interval lies within
    ±`bound` (a difference of two % accuracies cannot leave ±100); otherwise '+d [low, high]': the
    bootstrap interval of the paired per-seed differences when given, else the t interval clipped
    to ±`bound` (which decides no margin rule differently: a margin lies inside the bounds)."""
    if math.isnan(diff):
        return "–"
    if math.isnan(half):
        return f"{diff:+.{digits}f}"
    if -bound <= diff - half and diff + half <= bound:
        return f"{diff:+.{digits}f} ± {half:.{digits}f}"
    if per_seed is not None and len(per_seed) >= 2:
        _, low, high, _ = bounded_ci(per_seed, bounds=(-bound, bound))
    else:
        low, high = max(-bound, diff - half), min(bound, diff + half)
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


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


def summarise(frame: pd.DataFrame, by: list[str], metric: str, scale: float = 1.0, digits: int = 2,
              bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """One row per group: mean, ci95, n and a formatted 'mean ± ci' string of `metric`; with
    `bounds` (the scaled metric's range, e.g. (0, 100) for an accuracy in %) the text is
    `fmt_bounded`'s, which never leaves them."""
    rows = []
    for key, group in frame.groupby(by, sort=False, dropna=False):
        values = pd.to_numeric(group[metric], errors="coerce")
        mean, half, n = mean_ci(values)
        key = key if isinstance(key, tuple) else (key,)
        text = fmt_bounded(list(values * scale), digits, bounds) if bounds else fmt_ci(mean, half, scale, digits)
        rows.append(dict(zip(by, key)) | {"mean": mean, "ci95": half, "n": n, "text": text})
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


def paired_diff_ci(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> tuple[float, float, str]:
    """mean(a) − mean(b) with its CI, `a` and `b` indexed by seed. Where both sides have the same
    ≥ 2 seeds the runs are paired (a cell's methods share the seed's initial weights and batches),
    so the CI is that of the per-seed differences: the seed's own luck cancels. Otherwise Welch.
    Returns (difference, half-width, "paired" | "Welch")."""
    a, b = a.dropna(), b.dropna()
    if len(a) >= 2 and a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index):
        diff, half, _ = mean_ci((a - b.reindex(a.index)).to_numpy(), confidence)
        return diff, half, "paired"
    return (*diff_ci(a.to_numpy(), b.to_numpy(), confidence), "Welch")


def diff_ci(a, b, confidence: float = 0.95) -> tuple[float, float]:
    """mean(a) − mean(b) and the half-width of its Welch t confidence interval (nan with fewer
    than two values on a side; 0 when both sides are constant)."""
    a = np.asarray([v for v in a if not math.isnan(v)], float)
    b = np.asarray([v for v in b if not math.isnan(v)], float)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return diff, float(stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(va + vb))


# Verdicts decided by a CI, not by a point estimate: three seeds give wide CIs, and a rule that
# reads only the mean (or counts "the published value inside the CI" as a match) calls a claim
# reproduced that the runs cannot tell from its opposite. An interval too wide to decide says so.

def tolerance_verdict(published: float, mean: float, half: float, tolerance: float) -> str:
    """Matching a published value: reproduced when the CI is no wider than the tolerance and the
    mean is within it; not reproduced when the whole CI lies outside the tolerance band, or the CI
    is narrow and the mean outside; otherwise undecided (one value has no CI: undecided)."""
    gap = abs(mean - published)
    if math.isnan(half) or half > tolerance:
        return "not reproduced" if not math.isnan(half) and gap - half > tolerance else "undecided"
    return "reproduced" if gap <= tolerance else "not reproduced"


def margin_verdict(diff: float, half: float, margin: float) -> str:
    """Non-inferiority ("similar to", "comparable to" a baseline) at a margin in the same units:
    reproduced when the CI of the difference lies above −margin, not reproduced when it lies
    below, undecided when it straddles −margin (or there is no CI)."""
    if math.isnan(half):
        return "undecided"
    if diff - half >= -margin:
        return "reproduced"
    return "not reproduced" if diff + half < -margin else "undecided"
