"""An experiment is a grid of cells per profile plus the tables and figures it produces.

`cells(profile, seeds)` lists the cells; `report(ctx)` writes `results/<name>.md/.csv` and
`paper_figures/<name>-*.png` from the logged runs (never training anything).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import product

from suite.config import Cell


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    source: str  # the paper figure/table (or repository file) it reproduces
    grid: Callable[[str, int], list[Cell]]  # (profile, seeds) -> cells
    report: Callable | None = None  # (ReportContext) -> list of written paths
    profiles: tuple[str, ...] = ("smoke", "quick", "paper")

    def cells(self, profile: str, seeds: int = 1) -> list[Cell]:
        """The grid of a profile (empty when the experiment does not define that profile)."""
        if profile not in self.profiles:
            return []
        seen, out = set(), []
        for cell in self.grid(profile, seeds):
            if cell not in seen:
                seen.add(cell)
                out.append(cell)
        return out


def cross(methods: Iterable[str], models: Iterable[str], datasets: Iterable[str], profile: str, seeds: int,
          **overrides) -> list[Cell]:
    """The full product, each cell with the same overrides."""
    return [Cell(m, mo, d, s, profile).with_overrides(**overrides) if overrides else Cell(m, mo, d, s, profile)
            for m, mo, d, s in product(methods, models, datasets, range(seeds))]
