"""The comparison every results table shares: each method against BP in the same cell.

For each group (e.g. dataset × model) and method: final test accuracy mean ± 95% CI over seeds,
the difference from BP with Welch's two-sided p-value, seconds per epoch, the measured speedup
(BP's epoch time / the method's, same profile and machine), and time-to-target: the training
wall-clock (on the clock only) until the test accuracy first reaches TARGET_FRACTION of BP's
final mean accuracy in that group (a rule of this suite, stated in every table's notes).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report.stats import fmt_ci, mean_ci, welch_p

TARGET_FRACTION = 0.95
TARGET_NOTE = (f"Time to target: training seconds (on the clock) until test accuracy first reaches "
               f"{TARGET_FRACTION:.0%} of BP's final mean accuracy in the same cell; '–' = never reached. "
               f"Δ vs BP: difference of mean accuracies in points, p from Welch's t-test over seeds "
               f"(needs ≥ 2 seeds per side).")


def time_to_target(hist: pd.DataFrame, target: float) -> float:
    """Seconds of training until test_acc >= target, from one run's per-epoch history."""
    acc = hist[hist.key == "test_acc"].set_index("step")["value"].sort_index()
    clock = hist[hist.key == "train_time"].set_index("step")["value"].sort_index()
    reached = acc[acc >= target]
    return float(clock.get(reached.index[0], math.nan)) if len(reached) else math.nan


def compare_to_bp(runs: pd.DataFrame, history: pd.DataFrame | None, by: list[str],
                  baseline: str = "bp", method_col: str = "method") -> pd.DataFrame:
    """One row per (group, method). `runs` needs m.test_acc and m.epoch_time; `history` the
    per-epoch test_acc and train_time (from ctx.history) or None to skip time-to-target."""
    runs = runs[runs.status == "finished"].copy()
    if runs.empty:
        return pd.DataFrame()
    runs["acc"] = pd.to_numeric(runs["m.test_acc"], errors="coerce")
    runs["epoch_s"] = pd.to_numeric(runs["m.epoch_time"], errors="coerce")
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        base = group[group[method_col] == baseline]
        base_acc = base["acc"].to_numpy()
        base_time = base["epoch_s"].mean() if len(base) else math.nan
        target = TARGET_FRACTION * base_acc.mean() if len(base_acc) else math.nan
        for method, sub in group.groupby(method_col, sort=False):
            mean, half, n = mean_ci(sub["acc"])
            t_mean, t_half, _ = mean_ci(sub["epoch_s"])
            row = dict(zip(by, key)) | {method_col: method, "seeds": n,
                                        "test acc %": fmt_ci(mean, half, 100),
                                        "s/epoch": fmt_ci(t_mean, t_half, 1, 2)}
            if method != baseline and len(base_acc):
                diff = 100 * (mean - base_acc.mean())
                p = welch_p(sub["acc"], base_acc)
                row["Δ vs bp (pts)"] = f"{diff:+.2f}" + ("" if math.isnan(p) else f" (p={p:.3f})")
            else:
                row["Δ vs bp (pts)"] = "–"
            row["speedup vs bp (measured)"] = f"{base_time / t_mean:.2f}×" if len(base) and t_mean else "–"
            if history is not None and not history.empty and not math.isnan(target):
                times = [time_to_target(history[history.run_id == rid], target) for rid in sub["run_id"]]
                finite = [t for t in times if not math.isnan(t)]
                row["time to target (s)"] = f"{np.mean(finite):.1f}" + (
                    f" ({len(finite)}/{len(times)} seeds)" if len(finite) < len(times) else "") if finite else "–"
            rows.append(row)
    return pd.DataFrame(rows)
