"""The rule behind every decided verdict in results/verdicts.md.

A *not reproduced* must mean that the method failed, not the suite's reconstruction, its budget or
a rule no run could pass. So an experiment proposes an outcome from its figure and this module
decides whether the evidence may carry it:

(a) **setting**: the runs use the published setting, or a reconstruction whose free settings were
    searched under a declared budget, with BP given the same budget over its own space, on a
    validation split;
(b) **passable**: for a claim about a figure the method can only reach up to a computable bound
    (a speedup from skipped work), the bound at the setting reaches the claim;
(c) **provenance**: every run behind the verdict was trained from a clean commit, all of them from
    one commit (the verdict compares them), each cell with at least `MIN_SEEDS` seeds.

*not reproduced* needs (a)–(c); *reproduced* needs (c) (a claim that holds under any setting
holds, but its runs must be reproducible from git). A verdict that lacks a condition it needs is
*undecided*, naming what is missing. The bound of (b) is printed beside the measured figure
whether or not it decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

MIN_SEEDS = 3
SETTING_KINDS = ("published", "searched", "untuned", "proxy")
# a cell without its seed: the columns that name it in the runs frame (`overrides` is the JSON of
# the cell's overrides)
_CELL = ("method", "model", "dataset", "profile", "overrides")


@dataclass(frozen=True)
class Setting:
    """How the runs behind a verdict got their settings. `detail`: for "searched", the budget and
    spaces (e.g. "8 trials per method over lr, β; BP 8 over lr; 10% validation split"); for
    "untuned", which free settings were fixed without a search; for "proxy", what the runs stand
    in for that cannot be run here (other data, untrained weights); for "published", where the
    setting comes from."""
    kind: str
    detail: str = ""

    def __post_init__(self):
        if self.kind not in SETTING_KINDS:
            raise ValueError(f"setting kind must be one of {SETTING_KINDS}, got {self.kind!r}")
        if self.kind != "published" and not self.detail.strip():
            raise ValueError(f"a '{self.kind}' setting must say what was searched, left untuned or stood in for")


@dataclass(frozen=True)
class Bound:
    """The most the method can reach at the setting (e.g. the GEMM-count speedup of what it skips)
    and the least the claim needs, in the same units, with how the bound was computed."""
    value: float
    needed: float
    how: str

    @property
    def reaches(self) -> bool:
        return self.value >= self.needed

    def text(self) -> str:
        return f"bound {self.value:.2f}× vs claimed {self.needed:.2f}× ({self.how})"


@dataclass(frozen=True)
class Evidence:
    runs: pd.DataFrame  # every run the verdict rests on: git_commit, seed and the cell columns
    setting: Setting
    bound: Bound | None = None


def _short(commit: str) -> str:
    return commit[:7] + ("-dirty" if str(commit).endswith("-dirty") else "")


def provenance_gaps(runs: pd.DataFrame, min_seeds: int = MIN_SEEDS) -> list[str]:
    """What keeps `runs` from condition (c), each a short phrase; empty when it holds."""
    if runs.empty:
        return ["no runs"]
    gaps = []
    commits = runs["git_commit"].fillna("unknown").astype(str) if "git_commit" in runs else pd.Series(
        ["unknown"] * len(runs), index=runs.index)
    dirty = commits.str.endswith("-dirty") | commits.eq("unknown")
    if dirty.any():
        gaps.append(f"{int(dirty.sum())} of {len(runs)} runs trained from a dirty or unknown tree")
    base = commits.str.removesuffix("-dirty")  # a dirty tree is said above; here: which code it grew from
    if base.nunique() > 1:
        counts = base.str[:7].value_counts()
        gaps.append("runs from " + str(len(counts)) + " commits (" +
                    ", ".join(f"{c} {n}" for c, n in counts.items()) + ")")
    keys = [c for c in _CELL if c in runs]
    seeds = runs.groupby(keys, dropna=False)["seed"].nunique() if keys else pd.Series([runs["seed"].nunique()])
    short = seeds[seeds < min_seeds]
    if len(short):
        gaps.append(f"{len(short)} of {len(seeds)} cells with fewer than {min_seeds} seeds "
                    f"(fewest: {int(short.min())})")
    return gaps


def setting_gap(setting: Setting) -> str | None:
    """What keeps the setting from condition (a), or None."""
    if setting.kind == "untuned":
        return f"the reconstruction's free settings were not searched ({setting.detail})"
    if setting.kind == "proxy":
        return f"the runs are a proxy of the published setting, which cannot be run here ({setting.detail})"
    return None


def decide(outcome: str, evidence: Evidence | None) -> tuple[str, list[str]]:
    """The verdict the evidence carries, and the missing conditions that turned `outcome` into
    *undecided* (each prefixed with its letter). Outcomes other than reproduced / not reproduced
    pass unchanged (they make no claim about the method)."""
    if outcome not in ("reproduced", "not reproduced"):
        return outcome, []
    if evidence is None:
        raise ValueError(f"a '{outcome}' verdict needs its evidence (runs and setting) for the rule")
    missing = []
    if outcome == "not reproduced":
        gap = setting_gap(evidence.setting)
        if gap:
            missing.append(f"(a) {gap}")
        if evidence.bound is not None and not evidence.bound.reaches:
            missing.append(f"(b) the setting cannot reach the claim: {evidence.bound.text()}")
    missing += [f"(c) {g}" for g in provenance_gaps(evidence.runs)]
    return ("undecided" if missing else outcome), missing


def conditions_line(evidence: Evidence | None, missing: list[str]) -> str:
    """One line for the verdict's section: each condition and whether it held."""
    if evidence is None:
        return "–"
    held = {m[1] for m in missing}
    parts = [f"(a) setting: {evidence.setting.kind}" + (f" ({evidence.setting.detail})" if evidence.setting.detail else "")
             + (" ✗" if "a" in held else (" ✓" if evidence.setting.kind in ("published", "searched") else " – (not needed)"))]
    if evidence.bound is not None:
        parts.append(f"(b) {evidence.bound.text()}" + (" ✗" if "b" in held else " ✓"))
    parts.append("(c) provenance: " + ("✗" if "c" in held else f"✓ ({_commit_summary(evidence.runs)})"))
    return "; ".join(parts)


def _commit_summary(runs: pd.DataFrame) -> str:
    commits = sorted({_short(c) for c in runs["git_commit"].dropna().astype(str)}) if "git_commit" in runs else []
    return f"{len(runs)} runs at {', '.join(commits) or '–'}"

