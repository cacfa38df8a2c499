"""The report driver: reads each experiment's runs back from MLflow, runs its report, and writes
results/ (tables, verdicts.md, the front page, index.json) and paper_figures/. It never trains.
Only the CLI imports it; the experiments use the library modules of `suite.report`."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pandas as pd

from suite.atomic import replacing, write_text
from suite.config import resolve
from suite.errors import UsageError
from suite.experiments import EXPERIMENTS
from suite.provenance import git_commit, hardware, package_versions
from suite.report.context import ReportContext, set_style
from suite.report.runs import experiment_runs
from suite.tracking import Tracker

INDEX = "index.json"
BEST = "best"  # report each experiment at its highest complete profile
RANKED_PROFILES = ("paper", "verify", "quick")


def complete_profile(tracker: Tracker, experiment, seeds: int) -> str:
    """The highest profile whose whole grid, at `seeds` seeds, has a complete run for every cell
    (finished, skipped or diverged); `quick` when none has. A partly run `paper` grid never
    replaces a complete `quick` one in the committed tables."""
    for profile in RANKED_PROFILES:
        cells = experiment.cells(profile, seeds)
        if not cells:
            continue
        runs = experiment_runs(tracker, experiment, profile, seeds)
        if len(runs) and runs["cell_hash"].nunique() == len({resolve(c).cell_hash for c in cells}):
            return profile
    return "quick"


def build_report(experiments, profile: str, tracker: Tracker, seeds: int = 1,
                 results_dir: Path = Path("results"), figures_dir: Path = Path("paper_figures"),
                 force: bool = False) -> list[ReportContext]:
    """`profile` BEST chooses each experiment's profile with `complete_profile`. Every
    experiment's runs are read first, and nothing is written when the report would replace the
    tables in `results_dir` with ones built from fewer runs (`check_not_fewer`) unless `force`."""
    gathered = []
    for exp in experiments:
        if exp.report is None:
            continue
        chosen = complete_profile(tracker, exp, seeds) if profile == BEST else profile
        gathered.append((exp, chosen, experiment_runs(tracker, exp, chosen, seeds)))
    check_not_fewer([(exp.name, len(runs)) for exp, _, runs in gathered], tracker.uri, results_dir, force)
    set_style()
    done = []
    for exp, chosen, runs in gathered:
        ctx = ReportContext(exp, chosen, tracker, runs, Path(results_dir), Path(figures_dir),
                            grid_cells=len({resolve(c).cell_hash for c in exp.cells(chosen, seeds)}))
        exp.report(ctx)
        done.append(ctx)
    return done


def recorded_runs(results_dir: Path) -> dict[str, int]:
    """How many runs each experiment's tables in `results_dir` were built from (results/index.json)."""
    path = Path(results_dir) / INDEX
    if not path.exists():
        return {}
    try:
        return {name: int(record.get("runs", 0)) for name, record in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError):
        raise UsageError(f"{path} is not the report index this suite writes; restore it from git, or "
                         f"write the report to another --results-dir") from None


def check_not_fewer(counts: list[tuple[str, int]], store: str, results_dir: Path, force: bool) -> None:
    """A report never silently replaces tables with emptier ones: no runs at all is an error (a
    mistyped or wrong store), and fewer runs than an experiment's tables in `results_dir` were
    built from needs `force`."""
    if counts and not any(n for _, n in counts):
        raise UsageError(f"the store {store} holds no complete runs of {', '.join(name for name, _ in counts)} at "
                         f"this profile and seed count: nothing was written. Check --tracking-uri, --profile "
                         f"and --seeds (the committed runs: sqlite:///results/mlruns.db, --seeds 3, "
                         f"--profile best)")
    before = recorded_runs(results_dir)
    fewer = [(name, n, before[name]) for name, n in counts if n < before.get(name, 0)]
    if fewer and not force:
        lines = "; ".join(f"{name}: {n} run(s), the tables hold {was}" for name, n, was in fewer)
        raise UsageError(f"the report would replace tables in {results_dir} with ones built from fewer runs "
                         f"({lines}). Nothing was written. Write elsewhere with --results-dir DIR "
                         f"--figures-dir DIR, or pass --force to replace them")


def _record(ctx) -> dict:
    """What the shared files (verdicts, figure index, provenance) need from one experiment's report."""
    runs = ctx.runs
    commits = sorted(runs["git_commit"].dropna().unique()) if len(runs) and "git_commit" in runs else []
    return {"verdicts": list(ctx.verdicts), "figures": list(ctx.figures), "runs": int(len(runs)),
            "commits": [str(c) for c in commits], "hardware": machines(runs)}


def machines(runs: pd.DataFrame) -> list[dict]:
    """The distinct machines of `runs` (their `hardware.*` tags, – where a run lacks one), each
    with its number of runs under "runs"."""
    hw_cols = [c for c in runs.columns if c.startswith("hardware.")] if len(runs) else []
    if not hw_cols:
        return []
    counts = runs[hw_cols].fillna("–").astype(str).value_counts(sort=False).reset_index(name="runs")
    return [{k: (int(v) if k == "runs" else str(v)) for k, v in h.items()} for h in counts.to_dict("records")]


def machine_line(machine: dict) -> str:
    """`- N run(s): platform=…, cpu_model=…, …` for one entry of `machines`."""
    fields = ", ".join(f"{k.removeprefix('hardware.')}={v}" for k, v in machine.items() if k != "runs")
    return f"- {machine['runs']} run(s): {fields}"


def merged_index(contexts, results_dir: Path) -> list[dict]:
    """Every reported experiment's record: this report's contexts replace their experiments' entries
    in results/index.json and the others' stay, so `bpsuite report <one experiment>` rewrites the
    shared files without dropping what the other experiments reported."""
    path = Path(results_dir) / INDEX
    index = json.loads(path.read_text()) if path.exists() else {}
    index = {k: v for k, v in index.items() if k in EXPERIMENTS}  # a removed experiment drops out
    index |= {ctx.name: _record(ctx) for ctx in contexts}
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    order = {name: i for i, name in enumerate(EXPERIMENTS)}
    return [{"name": k, **index[k]} for k in sorted(index, key=lambda k: order.get(k, len(order)))]


VERDICT_RULE = (
    "A figure's outcome becomes a verdict only under the rule in `suite/report/fairness.py`: *not reproduced* "
    "needs (a) the published setting, or the reconstruction's free settings searched under a declared budget "
    "with BP given the same budget; (b) for a speed claim, a compute bound at the setting that reaches the "
    "claim; (c) every run behind it from one clean commit, ≥ 3 seeds per cell. *reproduced* needs (c). A "
    "verdict missing a condition it needs is *undecided* and names it. *not testable here*: the claim needs "
    "what this machine lacks (CIFAR files, ImageNet, a GPU budget).")


def write_verdicts(records: list[dict], results_dir: Path) -> Path | None:
    """results/verdicts.md (a compact table, then one section per claim) and results/verdicts.csv
    (every field, one row per claim) for every claim the reported experiments test."""
    rows = [v for record in records for v in record["verdicts"]]
    if not rows:
        return None
    rows = [{key: "–" for key in ("profile", "claim", "source", "setting used", "reproduced", "rule")} | row
            for row in rows]
    frame = pd.DataFrame(rows)
    counts = frame["verdict"].value_counts()
    lines = ["# Verdicts: every published claim the suite tests", "",
             "Computed by each experiment's report from the committed runs (`nox -s figures` rebuilds this "
             "page and `verdicts.csv`). " + VERDICT_RULE, "",
             "Counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".", "",
             *verdict_table_lines(rows)]
    for i, row in enumerate(rows, 1):
        lines += ["", f'<a id="{i}"></a>', f"## {i}. {row['experiment']}: {row['claim']}", "",
                  f"- **Verdict:** {row['verdict']}" + (f" (the figure alone: {row['figure says']})"
                                                        if row.get("figure says", row["verdict"]) != row["verdict"] else ""),
                  f"- **Figure:** {row['reproduced']}",
                  f"- **Rule:** {row['rule']}",
                  f"- **Setting used:** {row['setting used']} (profile `{row['profile']}`); "
                  f"report: [{row['experiment']}.md]({row['experiment']}.md)",
                  f"- **Source:** {row['source']}"]
        if row.get("conditions", "–") != "–":
            lines.append(f"- **Conditions:** {row['conditions']}")
        if str(row.get("why", "")).strip():
            lines.append(f"- **Why:** {row['why']}")
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    path = Path(results_dir) / "verdicts.md"
    write_text(path, "\n".join(lines) + "\n")
    with replacing(Path(results_dir) / "verdicts.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return path


def verdict_table_lines(rows: list[dict], link: str = "") -> list[str]:
    """The compact verdict table (one line per claim); `link` prefixes each row's anchor."""
    lines = ["| # | experiment | claim | verdict | figure |", "|---:|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        said = row.get("figure says", row["verdict"])
        verdict = row["verdict"] + (f" (figure: {said})" if said != row["verdict"] else "")
        lines.append(f"| [{i}]({link}#{i}) | {row['experiment']} | {row.get('claim', '–')} | **{verdict}** | "
                     f"{row.get('reproduced', '–')} |")
    return lines


def write_front_page(records: list[dict], results_dir: Path, figures_dir: Path) -> Path:
    """results/README.md: the verdict counts and table, and a link to every report and figure."""
    rows = [v for record in records for v in record["verdicts"]]
    counts = pd.Series([r["verdict"] for r in rows], dtype=object).value_counts()
    figures_rel = os.path.relpath(Path(figures_dir).resolve(), Path(results_dir).resolve())
    lines = ["# Results", "",
             "Generated by `nox -s figures` from the committed runs (`mlruns.db` here); do not edit by hand. "
             "Every accuracy is a mean with its 95% CI over the seeds named in its table; the code, machines and "
             "packages behind the runs are in [PROVENANCE.md](PROVENANCE.md).", "",
             "## Verdicts", "", VERDICT_RULE, "",
             "Counts: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none") + ". Each row's rule, "
             "setting, conditions and diagnosis: [verdicts.md](verdicts.md) (and `verdicts.csv`).", "",
             *verdict_table_lines(rows, "verdicts.md"), "", "## Reports", "",
             "| experiment | runs | tables | figures |", "|---|---:|---|---|"]
    for record in records:
        tables = sorted(p.name for p in Path(results_dir).glob(f"{record['name']}*.md"))
        figures = ", ".join(f"[{f['file'].removeprefix(record['name'] + '-').removesuffix('.png')}]"
                            f"({figures_rel}/{f['file']})" for f in record["figures"])
        lines.append(f"| {record['name']} | {record['runs']} | " + ", ".join(f"[{t}]({t})" for t in tables)
                     + f" | {figures or '–'} |")
    path = Path(results_dir) / "README.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def write_index(contexts: list[ReportContext], results_dir: Path, figures_dir: Path) -> None:
    """paper_figures/README.md indexes every figure against its source; results/PROVENANCE.md
    records which code, machine and runs produced the tables; results/verdicts.md lists the
    verdicts. All three cover every experiment in results/index.json, not only this report's."""
    records = merged_index(contexts, results_dir)
    write_verdicts(records, results_dir)
    write_front_page(records, results_dir, figures_dir)

    figures = [f for record in records for f in record["figures"]]
    lines = ["# Paper-style figures", "",
             "Generated by `bpsuite report` from the runs logged in MLflow. *measured* = wall-clock or "
             "accuracy from real runs; *modelled* = computed from a model (e.g. skippable MACs, projected "
             "K-device time), never timed.", "",
             "| figure | reproduces | kind | profile |", "|---|---|---|---|"]
    lines += [f"| [{f['title']}]({f['file']}) | {f['reproduces']} | {f['kind']} | {f['profile']} |" for f in figures]
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    write_text(Path(figures_dir) / "README.md", "\n".join(lines) + "\n")

    n_runs = sum(record["runs"] for record in records)
    commits = sorted({c for record in records for c in record["commits"]})
    by_machine: dict[tuple, int] = {}
    for record in records:
        for h in record["hardware"]:
            key = tuple((k, v) for k, v in h.items() if k != "runs")
            by_machine[key] = by_machine.get(key, 0) + h["runs"]
    prov = ["# Provenance of results/ and paper_figures/", "",
            f"Report written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} "
            f"by commit `{git_commit()}`.", "",
            f"Runs: {n_runs}; they were trained at commit(s): {', '.join(f'`{c}`' for c in commits) or '–'}.", "",
            "Hardware of the runs (one line per distinct machine; `cpu_model` and `cpu_capability`, the "
            "instruction set torch's CPU kernels use, tell apart machines with the same platform string; "
            "runs older than these fields show –):", ""]
    prov += [machine_line({**dict(key), "runs": count}) for key, count in by_machine.items()] or ["- –"]
    prov += ["", "Report machine: " + ", ".join(f"{k}={v}" for k, v in hardware().items()),
             "", "Packages: " + ", ".join(f"{k} {v}" for k, v in package_versions().items())]
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    write_text(Path(results_dir) / "PROVENANCE.md", "\n".join(prov) + "\n")
