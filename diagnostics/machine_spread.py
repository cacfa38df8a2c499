"""How far does the same command move on another machine? Compares the runs of two MLflow stores
cell by cell: the committed store behind results/ and a store the same `bpsuite reproduce`
command filled on a second machine. A cell is the same cell in both when its `cell_hash` is (the
hash covers every resolved setting, the seed included), so each pair differs only in the machine.

For each pair it prints both accuracies, their difference, and, as the yardstick, the standard
deviation of the reference machine's accuracies over the cell's seeds; beside them the ratio of
the two training times. The summary says how many cells came out bitwise identical, how large
the differences are, how many exceed the seed-to-seed spread, and which runs changed status
(finished ↔ diverged). The hardware of both sides comes from the runs' own provenance tags.

    python -m diagnostics.machine_spread --other sqlite:////tmp/other/mlruns.db \\
        [--reference sqlite:///results/mlruns.db] [--out results/machine-spread.md]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from suite.metrics import TEST_ACC, TRAIN_TIME
from suite.report.build import machine_line, machines
from suite.tracking import Tracker

ACC, TIME = f"m.{TEST_ACC.key}", f"m.{TRAIN_TIME.key}"
COMPARED = ("finished", "diverged")  # a skipped cell has nothing to compare


def cell_without_seed(label: str) -> str:
    """`fa/resnet20/mnist/s0[lr=…]` -> `fa/resnet20/mnist[lr=…]`: the cell over its seeds."""
    return re.sub(r"/s\d+(?=\[|$)", "", label)


def pair_runs(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """One row per cell completed in both stores: label, seed, status and test accuracy (%) on
    each side, their difference, the reference's seed SD for the cell, and the time ratio."""
    ref = reference[reference["status"].isin(COMPARED)].copy()
    ref["cell"] = ref["cell_label"].map(cell_without_seed)
    acc = pd.to_numeric(ref[ACC], errors="coerce") * 100
    seed_sd = acc[ref["status"] == "finished"].groupby(ref["cell"]).std(ddof=1)
    oth = other[other["status"].isin(COMPARED)]
    # the newest complete run per cell on each side (a store holds one, unless a cell was rerun)
    keep = ["cell_hash", "cell_label", "seed", "status", ACC, TIME]
    pairs = ref[keep + ["cell"]].drop_duplicates("cell_hash", keep="last").merge(
        oth[keep].drop_duplicates("cell_hash", keep="last"), on="cell_hash", suffixes=("_ref", "_other"))
    out = pd.DataFrame({
        "cell": pairs["cell_label_ref"], "seed": pairs["seed_ref"],
        "status_ref": pairs["status_ref"], "status_other": pairs["status_other"],
        "acc_ref": pd.to_numeric(pairs[f"{ACC}_ref"], errors="coerce") * 100,
        "acc_other": pd.to_numeric(pairs[f"{ACC}_other"], errors="coerce") * 100,
        "seed_sd_ref": pairs["cell"].map(seed_sd),
        "time_ratio": (pd.to_numeric(pairs[f"{TIME}_other"], errors="coerce")
                       / pd.to_numeric(pairs[f"{TIME}_ref"], errors="coerce")),
    })
    both_finished = (out["status_ref"] == "finished") & (out["status_other"] == "finished")
    out["delta"] = (out["acc_other"] - out["acc_ref"]).where(both_finished)
    return out.sort_values("cell").reset_index(drop=True)


def summarise(pairs: pd.DataFrame) -> list[str]:
    """The findings in a few sentences' worth of numbers."""
    finished = pairs.dropna(subset=["delta"])
    moved = finished["delta"].abs()
    identical = int((moved == 0).sum())
    beyond = finished[moved > finished["seed_sd_ref"]]
    changed = pairs[pairs["status_ref"] != pairs["status_other"]]
    lines = [f"- cells compared: {len(pairs)} ({len(finished)} finished on both machines)",
             f"- bitwise-identical test accuracy: {identical} of {len(finished)}"]
    if len(finished):
        lines.append(f"- |Δ test acc| (points): median {moved.median():.2f}, 90th percentile "
                     f"{moved.quantile(0.9):.2f}, largest {moved.max():.2f}")
        with_sd = finished.dropna(subset=["seed_sd_ref"])
        lines.append(f"- cells where the machine moved the accuracy by more than the reference's seed-to-seed "
                     f"SD: {len(beyond)} of {len(with_sd)} (median seed SD of those cells "
                     f"{with_sd['seed_sd_ref'].median():.2f} points)")
        lines.append(f"- training time, other / reference: median {pairs['time_ratio'].median():.2f}× "
                     f"(range {pairs['time_ratio'].min():.2f}–{pairs['time_ratio'].max():.2f})")
        lines.append("- by model:")
        for model, group in finished.groupby(finished["cell"].str.split("/").str[1]):
            lines.append(f"  - {model}: {int((group['delta'] == 0).sum())} of {len(group)} identical, "
                         f"|Δ| median {group['delta'].abs().median():.2f}, largest {group['delta'].abs().max():.2f}; "
                         f"time ratio median {pairs.loc[group.index, 'time_ratio'].median():.2f}×")
    lines.append(f"- status changed: {len(changed)}" + "".join(
        f"; {r.cell} {r.status_ref} → {r.status_other}" for r in changed.itertuples()))
    return lines


def machine_lines(runs: pd.DataFrame) -> list[str]:
    """One line per distinct machine among the compared runs, as results/PROVENANCE.md writes them."""
    return [machine_line(m) for m in machines(runs[runs["status"].isin(COMPARED)])]


def report(reference_uri: str, other_uri: str) -> str:
    reference, other = Tracker(reference_uri).runs_frame(), Tracker(other_uri).runs_frame()
    pairs = pair_runs(reference, other)
    table = pairs.assign(**{c: pairs[c].round(2) for c in ("acc_ref", "acc_other", "delta", "seed_sd_ref",
                                                           "time_ratio")})
    return "\n".join([
        "# The same command on two machines", "",
        "Written by `python -m diagnostics.machine_spread`: each cell's run on the reference machine beside "
        "the same cell (same `cell_hash`: every resolved setting and the seed) run on the other machine.", "",
        "Reference machine (the runs paired below):", "",
        *machine_lines(reference[reference["cell_hash"].isin(other["cell_hash"])]), "",
        "Other machine:", "", *machine_lines(other), "",
        *summarise(pairs), "",
        table.to_markdown(index=False), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=f"sqlite:///{Path('results/mlruns.db').resolve()}")
    parser.add_argument("--other", required=True, help="tracking URI of the second machine's store")
    parser.add_argument("--out", default=None, help="write the report here as well as printing it")
    args = parser.parse_args()
    text = report(args.reference, args.other)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
