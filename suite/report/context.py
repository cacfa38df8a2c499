"""What an experiment's report function receives: its runs as pandas, and where to write.

Every table goes to `results/<experiment>[-suffix].md` and `.csv`; every figure to
`paper_figures/<experiment>-<suffix>.png`, titled with what it reproduces and labelled
*measured* or *modelled*.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402

from suite.atomic import replacing, write_text  # noqa: E402
from suite.report.fairness import Evidence, conditions_line, decide  # noqa: E402

CELL_COLUMNS = ["method", "model", "dataset", "seed"]
KINDS = ("measured", "modelled")
# what a committed claim can come to (results/verdicts.md)
VERDICTS = ("reproduced", "not reproduced", "not testable here", "undecided")


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)


@dataclass
class ReportContext:
    experiment: object  # suite.experiments.base.Experiment
    profile: str
    tracker: object  # suite.tracking.Tracker
    runs: pd.DataFrame  # one row per cell (its complete run); cell columns, o.<override>, m.<metric>
    results_dir: Path
    figures_dir: Path
    written: list[Path] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)  # index entries for paper_figures/README.md
    verdicts: list[dict] = field(default_factory=list)  # rows of results/verdicts.md
    settings: list[dict] = field(default_factory=list)  # "setting | published | used | source" rows
    grid_cells: int | None = None  # cells in the experiment's grid at this profile and seeds (None: unknown)

    def declare_settings(self, rows: list[tuple[str, str, str, str]]) -> None:
        """The experiment's settings beside the published ones: (setting, published, used, source).
        A used value the paper does not give is marked in `source` (e.g. "reconstruction: ...").
        The experiment's main table (suffix "") opens with them."""
        self.settings = [{"setting": a, "published": b, "used": c, "source": d} for a, b, c, d in rows]

    def coverage(self) -> str:
        """"k of n cells have no complete run", or "" when every cell has one (or n is unknown)."""
        if self.grid_cells is None:
            return ""
        missing = self.grid_cells - (int(self.runs["cell_hash"].nunique()) if len(self.runs) else 0)
        return f"**{missing} of {self.grid_cells} cells of the grid have no complete run.**" if missing > 0 else ""

    @property
    def name(self) -> str:
        return self.experiment.name

    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "finished"] if len(self.runs) else self.runs

    def history(self, keys: list[str], runs: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per-epoch metrics in long form, joined with the cell columns of each run."""
        runs = self.finished() if runs is None else runs
        if runs.empty:
            return pd.DataFrame(columns=["run_id", "key", "step", "value"])
        hist = self.tracker.history(list(runs["run_id"]), keys)
        cols = ["run_id"] + [c for c in runs.columns if c in CELL_COLUMNS or c.startswith("o.")]
        return hist.merge(runs[cols], on="run_id", how="left")

    def write_table(self, table: pd.DataFrame, suffix: str = "", title: str = "", notes: str = "") -> Path:
        stem = self.name + (f"-{suffix}" if suffix else "")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = self.results_dir / f"{stem}.csv", self.results_dir / f"{stem}.md"
        with replacing(csv_path) as tmp:
            table.to_csv(tmp, index=False)
        body = table.to_markdown(index=False) if len(table) else "_no finished runs_"
        header = f"# {title or self.experiment.title}\n\nReproduces: {self.experiment.source}. Profile: `{self.profile}`."
        header += f" {self.coverage()}\n\n" if self.coverage() else "\n\n"
        if self.settings and not suffix:
            header += ("## Settings: published and used\n\n" + pd.DataFrame(self.settings).to_markdown(index=False)
                       + "\n\n## Results\n\n")
        write_text(md_path, header + body + ("\n\n" + notes.strip() if notes else "") + "\n")
        self.written += [md_path, csv_path]
        return md_path

    def add_verdict(self, claim: str, source: str, setting: str, reproduced: str, rule: str, verdict: str,
                    why: str = "", evidence: Evidence | None = None) -> None:
        """One published claim this experiment tests: the setting used (beside the published one),
        the reproduced figure (with its CI), the rule that decides, and the outcome the figure
        gives; `why` is the diagnosis of a "not reproduced" or the reason a claim is "not testable
        here". A reproduced / not reproduced outcome needs its `evidence` (the runs it rests on and
        how their settings were chosen): `suite.report.fairness.decide` turns it into *undecided*
        when a condition it needs is missing, and the row says which."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if verdict in ("not reproduced", "not testable here", "undecided") and not why.strip():
            raise ValueError(f"a '{verdict}' verdict needs its diagnosis or reason (claim: {claim})")
        decided, missing = decide(verdict, evidence)
        if missing:
            why = (f"the figure alone says *{verdict}*, but the rule for it lacks " + "; ".join(missing)
                   + (f". Diagnosis: {why}" if why.strip() else ""))
        self.verdicts.append({"experiment": self.name, "profile": self.profile, "claim": claim, "source": source,
                              "setting used": setting, "reproduced": reproduced, "rule": rule,
                              "verdict": decided, "figure says": verdict, "why": why,
                              "conditions": conditions_line(evidence, missing)})

    def save_figure(self, fig, suffix: str, kind: str, title: str, reproduces: str | None = None) -> Path:
        if kind not in KINDS:
            raise ValueError(f"figure kind must be one of {KINDS}")
        from suite.report.figures import MAX_WIDTH_IN
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        width, height = fig.get_size_inches()
        if width > MAX_WIDTH_IN:  # readable at GitHub's page width: scale the whole figure down
            fig.set_size_inches(MAX_WIDTH_IN, height * MAX_WIDTH_IN / width)
            width = MAX_WIDTH_IN
        # the title wrapped to the figure's width (≈ 6.5 pt a character at 11 pt), never clipped
        fig.suptitle(textwrap.fill(f"{title} ({kind})", max(30, int(width * 72 / 6.5))), fontsize=11)
        if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):  # figures.panels lays itself out
            fig.tight_layout()
        path = self.figures_dir / f"{self.name}-{suffix}.png"
        try:
            with replacing(path) as tmp:
                fig.savefig(tmp, dpi=120, bbox_inches="tight", pad_inches=0.08)
        finally:
            plt.close(fig)
        self.written.append(path)
        self.figures.append({"file": path.name, "title": title, "kind": kind,
                             "reproduces": reproduces or self.experiment.source, "profile": self.profile})
        return path


def hparam(row: pd.Series, key: str, default=None):
    """A run's resolved hyper-parameter, as logged (param `hp.<key>`, a string: "0.25", "True");
    `default` where the run's method has no such key."""
    value = row.get(f"p.hp.{key}")
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else value


def with_variants(runs: pd.DataFrame, variant, order: tuple[str, ...]) -> pd.DataFrame:
    """Runs with a `variant` column (variant(row) -> label), sorted by model, then by the
    experiment's preferred variant order (unlisted variants last, alphabetically)."""
    runs = runs.assign(variant=runs.apply(variant, axis=1))
    rank = {v: i for i, v in enumerate(order)}
    runs = runs.assign(_rank=runs.variant.map(lambda v: rank.get(v, len(order))))
    return runs.sort_values(["model", "_rank", "variant"], kind="stable").drop(columns="_rank")


def overrides_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """Expand the `overrides` tag (JSON) into `o.<key>` columns."""
    if runs.empty or "overrides" not in runs:
        return runs
    expanded = pd.DataFrame([json.loads(o) if isinstance(o, str) else {} for o in runs["overrides"]],
                            index=runs.index).add_prefix("o.")
    return pd.concat([runs, expanded], axis=1)
