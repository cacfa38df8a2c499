"""The comparison every results table shares: each method against BP in the same cell.

For each group (e.g. dataset × model) and method: final test accuracy mean ± 95% CI over seeds,
the difference from BP with Welch's two-sided p-value, seconds per epoch end to end (the whole
run's training time over its epochs), the measured end-to-end speedup (BP's training time / the
method's, same profile and machine), each training phase's seconds per epoch for methods with
phases, and time-to-target: the training wall-clock (on the clock only) until the test accuracy
first reaches TARGET_FRACTION of BP's final mean accuracy in that group (a rule of this suite,
stated in every table's notes). A run that diverged is shown as "diverged (step N)", never as an
accuracy; a group whose runs used different thread counts has its speed figures flagged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.metrics import PHASE_EPOCHS, PHASE_TIME
from suite.report.stats import fmt_bounded, fmt_ci, mean_ci, welch_p

TARGET_FRACTION = 0.95
TARGET_NOTE = (f"s/epoch and speedup are end to end: the whole run's training time (train_step and "
               f"end_epoch; diagnostics and evaluation excluded) over its epochs; 'phases' gives each "
               f"training phase's own s/epoch for methods that have phases. "
               f"Time to target: training seconds (on the clock) until test accuracy first reaches "
               f"{TARGET_FRACTION:.0%} of BP's final mean accuracy in the same cell; '–' = never reached. "
               f"Δ vs BP: difference of mean accuracies in points, p from Welch's t-test over seeds "
               f"(needs ≥ 2 seeds per side). 'diverged (step N)': every seed's loss blew up (non-finite "
               f"or past the divergence bound; N = first step, lowest over seeds); 'k/n diverged' beside "
               f"an accuracy: the accuracy is over the seeds that did not. 'k/n at chance': seeds that finished "
               f"without learning (final training loss within 10% of ln C, the loss of a uniform guess over C "
               f"classes, and test accuracy below 2/C); they are in the mean.")


def epoch_seconds(runs: pd.DataFrame) -> pd.Series:
    """End-to-end seconds per epoch of each run: total training time / epochs."""
    return pd.to_numeric(runs["m.train_time"], errors="coerce") / pd.to_numeric(runs["p.train.epochs"], errors="coerce")


def phase_seconds(row: pd.Series) -> dict[str, float]:
    """{phase: seconds per epoch of that phase} from a run's phase_time.* / phase_epochs.* metrics."""
    out = {}
    for col in PHASE_TIME.columns(row.index):
        value = row[col]
        if pd.notna(value):
            name = PHASE_TIME.values(col[2:])["phase"]
            epochs = row.get("m." + PHASE_EPOCHS.name(phase=name))
            if epochs and pd.notna(epochs):
                out[name] = float(value) / float(epochs)
    return out


def phase_text(runs: pd.DataFrame) -> str:
    """'parallel 1.20, serial 2.31' (mean s/epoch of each phase over the runs), or '–'."""
    per_run = [phase_seconds(row) for _, row in runs.iterrows()]
    names = list(dict.fromkeys(n for d in per_run for n in d))
    if not names:
        return "–"
    return ", ".join(f"{n} {np.mean([d[n] for d in per_run if n in d]):.2f}" for n in names)


def diverged_text(runs: pd.DataFrame) -> str:
    steps = pd.to_numeric(runs.get("m.diverged_step"), errors="coerce").dropna() if len(runs) else []
    return f"diverged (step {int(min(steps))})" if len(steps) else "diverged"


def at_chance(runs: pd.DataFrame) -> pd.Series:
    """Finished runs that learned nothing: final training loss within 10% of ln C (the loss of a
    uniform guess over C classes) and test accuracy below twice chance. They are averaged in (the
    run finished; its loss never blew up), but the table names them, so a mean dragged down by a
    collapsed seed is not read as a method that learns slowly."""
    from suite.data.sources import DATASETS
    if runs.empty or "m.train_loss" not in runs or "m.test_acc" not in runs:
        return pd.Series(False, index=runs.index)  # nothing logged to judge by
    classes = runs["dataset"].map(lambda d: DATASETS[d].num_classes if d in DATASETS else math.nan).astype(float)
    loss = pd.to_numeric(runs.get("m.train_loss"), errors="coerce")
    acc = pd.to_numeric(runs.get("m.test_acc"), errors="coerce")
    return (loss > 0.9 * np.log(classes)) & (acc < 2 / classes)


def at_chance_text(sub: pd.DataFrame, total: int) -> str:
    flat = sub[at_chance(sub)]
    if flat.empty:
        return ""
    seeds = ", ".join(str(s) for s in sorted(flat["seed"])) if "seed" in flat else "?"
    return f" ({len(flat)}/{total} at chance: seed {seeds})"


def at_chance_causes(runs: pd.DataFrame, history: pd.DataFrame) -> list[str]:
    """One line per run that finished at chance, with what its epoch-mean training loss did: a
    first epoch above ln C (a blow-up the divergence bound did not catch) or a loss that never
    left ln C (no learning signal at this rate). `history` needs the runs' train_loss."""
    from suite.data.sources import DATASETS
    done = runs[runs.status == "finished"]
    lines = []
    for _, run in done[at_chance(done)].iterrows():
        loss = history[(history.run_id == run.run_id) & (history.key == "train_loss")].sort_values("step")["value"]
        chance = math.log(DATASETS[run.dataset].num_classes)
        shown = [f"{v:.2f}" for v in loss]
        if len(shown) > 6:  # a long run: its first epochs (where a blow-up shows) and its last
            shown = shown[:4] + [f"… ({len(shown) - 5} epochs) …", shown[-1]]
        path = " → ".join(shown)
        cause = ("rose above the uniform guess's loss in the first epoch and settled at it: a blow-up below the "
                 "divergence bound" if len(loss) and loss.iloc[0] > chance
                 else "never left the uniform guess's loss: no learning signal at this rate")
        lines.append(f"{run.method} on {run.model}, seed {run.seed}: epoch-mean training loss {path} "
                     f"(ln {DATASETS[run.dataset].num_classes} = {chance:.2f}); it {cause}.")
    return lines


def accuracy_by_seed(runs: pd.DataFrame) -> pd.Series:
    """Test accuracy (%) of the finished runs, indexed by seed (what `paired_diff_ci` pairs on)."""
    done = runs[runs.status == "finished"]
    return 100 * pd.to_numeric(done.set_index("seed")["m.test_acc"], errors="coerce")


def accuracy_text(every: pd.DataFrame) -> str:
    """'mean ± CI' over the finished seeds, with the diverged and at-chance seeds named; an
    all-diverged cell reads 'diverged (step N)', never an accuracy."""
    done, blown = every[every.status == "finished"], every[every.status == "diverged"]
    if done.empty:
        return diverged_text(blown) if len(blown) else "–"
    return (fmt_bounded(list(100 * pd.to_numeric(done["m.test_acc"], errors="coerce"))) + (f" ({len(blown)}/{len(every)} diverged)" if len(blown) else "")
            + at_chance_text(done, len(every)))


def thread_counts(runs: pd.DataFrame) -> set[str]:
    return set(runs["p.train.threads"].dropna().astype(str)) if "p.train.threads" in runs else set()


def time_to_target(hist: pd.DataFrame, target: float) -> float:
    """Seconds of training until test_acc >= target, from one run's per-epoch history."""
    acc = hist[hist.key == "test_acc"].set_index("step")["value"].sort_index()
    clock = hist[hist.key == "train_time"].set_index("step")["value"].sort_index()
    reached = acc[acc >= target]
    return float(clock.get(reached.index[0], math.nan)) if len(reached) else math.nan


def compare_to_bp(runs: pd.DataFrame, history: pd.DataFrame | None, by: list[str],
                  baseline: str = "bp", method_col: str = "method") -> pd.DataFrame:
    """One row per (group, method). `runs` needs m.test_acc, m.train_time and p.train.epochs;
    `history` the per-epoch test_acc and train_time (from ctx.history) or None to skip
    time-to-target. Diverged runs are counted, never averaged."""
    runs = runs[runs.status.isin(["finished", "diverged"])].copy()
    if runs.empty:
        return pd.DataFrame()
    runs["acc"] = pd.to_numeric(runs["m.test_acc"], errors="coerce")
    runs["epoch_s"] = epoch_seconds(runs)
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        done = group[group.status == "finished"]
        base = done[done[method_col] == baseline]
        base_acc = base["acc"].to_numpy()
        base_time = base["epoch_s"].mean() if len(base) else math.nan
        target = TARGET_FRACTION * base_acc.mean() if len(base_acc) else math.nan
        mixed_threads = len(thread_counts(done)) > 1
        for method, every in group.groupby(method_col, sort=False):
            sub = every[every.status == "finished"]
            blown = every[every.status == "diverged"]
            row = dict(zip(by, key)) | {method_col: method, "seeds": len(every)}
            if sub.empty:
                rows.append(row | {"test acc %": diverged_text(blown), "s/epoch": "–", "phases (s/epoch)": "–",
                                   "Δ vs bp (pts)": "–", "speedup vs bp (measured)": "–"}
                            | ({"time to target (s)": "–"} if history is not None else {}))
                continue
            mean, half, n = mean_ci(sub["acc"])
            t_mean, t_half, _ = mean_ci(sub["epoch_s"])
            row |= {"test acc %": accuracy_text(every), "s/epoch": fmt_ci(t_mean, t_half, 1, 2),
                    "phases (s/epoch)": phase_text(sub)}
            if method != baseline and len(base_acc):
                diff = 100 * (mean - base_acc.mean())
                p = welch_p(sub["acc"], base_acc)
                row["Δ vs bp (pts)"] = f"{diff:+.2f}" + ("" if math.isnan(p) else f" (p={p:.3f})")
            else:
                row["Δ vs bp (pts)"] = "–"
            speed = f"{base_time / t_mean:.2f}×" if len(base) and t_mean else "–"
            row["speedup vs bp (measured)"] = speed + (" (mixed thread counts)" if mixed_threads and len(base) else "")
            if history is not None:
                row["time to target (s)"] = "–"
                if not history.empty and not math.isnan(target):
                    times = [time_to_target(history[history.run_id == rid], target) for rid in sub["run_id"]]
                    finite = [t for t in times if not math.isnan(t)]
                    row["time to target (s)"] = f"{np.mean(finite):.1f}" + (
                        f" ({len(finite)}/{len(times)} seeds)" if len(finite) < len(times) else "") if finite else "–"
            rows.append(row)
    table = pd.DataFrame(rows)
    if "phases (s/epoch)" in table and (table["phases (s/epoch)"] == "–").all():
        table = table.drop(columns="phases (s/epoch)")
    return table
