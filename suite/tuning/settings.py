"""The tuned settings: one committed JSON file, and how experiments apply it to their cells.

`baselines/tuned-settings.json` holds one entry per tuned cell: the settings its study chose
(as `--set` strings) and the study's provenance (budget, sampler and its seed, objective, the
validation split, search space, best validation accuracy, commit, date). An entry matches a grid
cell by identity: experiment, profile, method, model, dataset and the cell's own overrides (the
settings the experiment already sets, e.g. the `summary` grid's lr 0.02 on the plain cnn). The
training seed is not part of it: `--seeds 3` repeats use the settings tuned at seed 0. A changed
experiment override is a different identity, so stale settings never apply silently.

Experiments opt in by passing their cells through `apply_tuned` in their grid (today: `summary`).
`bpsuite reproduce/report --settings defaults` turns it off for a call; `tuned` (the default)
applies whatever the file holds. This module imports no Optuna: grids use it at every listing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from suite.config import Cell
from suite.errors import UsageError

TUNED_SETTINGS = Path(__file__).resolve().parents[2] / "baselines" / "tuned-settings.json"
MODES = ("defaults", "tuned")
FORMAT = 1

_selection = {"mode": "tuned", "path": None}  # path None = TUNED_SETTINGS (read at call time)


def select(mode: str, path: Path | None = None) -> None:
    """Which settings the experiments' grids use from now on in this process."""
    if mode not in MODES:
        raise ValueError(f"settings mode must be one of {MODES}")
    _selection.update(mode=mode, path=path)


@contextlib.contextmanager
def selected(mode: str, path: Path | None = None):
    before = dict(_selection)
    select(mode, path)
    try:
        yield
    finally:
        _selection.update(before)


def current_mode() -> str:
    return _selection["mode"]


def current_path() -> Path:
    return Path(_selection["path"] or TUNED_SETTINGS)


def load(path: Path | None = None) -> list[dict]:
    """The file's entries (none when it does not exist)."""
    path = Path(path or current_path())
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); restore it from git or rerun `bpsuite tune`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path}: not a tuned-settings file of format {FORMAT}")
    return data["entries"]


def identity(experiment: str, cell: Cell) -> tuple:
    return (experiment, cell.profile, cell.method, cell.model, cell.dataset,
            json.dumps(dict(cell.overrides), sort_keys=True))


def entry_identity(entry: dict) -> tuple:
    return (entry["experiment"], entry["profile"], entry["method"], entry["model"], entry["dataset"],
            json.dumps(entry["overrides"], sort_keys=True))


def save(path: Path, entries: list[dict]) -> None:
    """Sorted by identity, written atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT,
            "about": "Settings chosen by `bpsuite tune` (docs/tuning.md), one entry per tuned cell, "
                     "with the study that chose them. Applied by experiments that opt in (summary).",
            "entries": sorted(entries, key=entry_identity)}
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


PROVENANCE = ("commit", "date", "optuna")


def upsert(path: Path, entry: dict, new_trials: int = 1) -> None:
    """Add `entry`, replacing the entry of the same identity (the latest study wins). A study that
    ran no new trial and chose what the file already holds keeps the file's commit and date: they
    say when the deciding trials ran, not when the file was last written."""
    old = [e for e in load(path) if entry_identity(e) == entry_identity(entry)]
    if old and not new_trials and all(old[0].get(k) == entry.get(k) for k in ("study", "settings", "trials")):
        entry = entry | {k: old[0][k] for k in PROVENANCE if k in old[0]}
    entries = [e for e in load(path) if entry_identity(e) != entry_identity(entry)]
    save(path, entries + [entry])


def entries_for(experiment: str, profile: str, path: Path | None = None) -> list[dict]:
    return [e for e in load(path) if e["experiment"] == experiment and e["profile"] == profile]


def apply_tuned(experiment: str, cells: list[Cell]) -> list[Cell]:
    """The cells with their tuned settings as overrides, where the file has an entry (and the
    selection is `tuned`); other cells unchanged."""
    if _selection["mode"] == "defaults" or not cells:
        return cells
    by_identity = {entry_identity(e): e for e in load()}
    out = []
    for cell in cells:
        entry = by_identity.get(identity(experiment, cell))
        out.append(cell.with_overrides(**entry["settings"]) if entry else cell)
    return out


def tuning_note(experiment: str, profile: str) -> str:
    """One paragraph for an experiment's table notes: which cells run at tuned settings, with
    what budget, objective and split. Empty when nothing is applied."""
    if _selection["mode"] == "defaults":
        return ""
    entries = entries_for(experiment, profile, current_path())
    if not entries:
        return ""
    budgets = sorted({(e["trials"], e["sampler"], e["sampler_seed"], e["val_fraction"], e["objective"])
                      for e in entries})
    keys = sorted({k for e in entries for k in e["settings"]})
    methods = sorted({e["method"] for e in entries})
    parts = [f"{trials} trials per method and cell ({sampler} sampler, seed {seed}), objective: {objective} "
             f"on {val:.0%} of the training set held out as validation"
             for trials, sampler, seed, val, objective in budgets]
    return (f"Tuned: {', '.join(keys)} of {len(entries)} cells ({', '.join(methods)}) come from `bpsuite tune` "
            f"(`{current_path().name}`): " + "; ".join(parts) + ". Every method gets the same budget, BP "
            "included; the test split is never read by a study, and the tuned runs train on the whole "
            "training set. Where a tuned setting exists it replaces the experiment's setting above. "
            f"Chosen settings and the sensitivity curves: `tuning-{experiment}.md`.")


def entry_from(result) -> dict | None:
    """The file entry of a complete study (`suite.tuning.study.StudyResult`); None when it has
    nothing to apply (skipped, incomplete, or every trial diverged)."""
    import datetime
    from importlib import metadata

    from suite.provenance import git_commit
    from suite.tuning.space import as_override, describe

    best = result.best if result.status == "complete" else None
    if best is None:
        return None
    spec = result.spec
    return {
        "experiment": spec.experiment, "profile": spec.cell.profile, "method": spec.cell.method,
        "model": spec.cell.model, "dataset": spec.cell.dataset, "overrides": dict(spec.cell.overrides),
        "settings": {k: as_override(v) for k, v in best.settings.items()},
        "best_val_acc": best.value, "trials": spec.trials,
        "diverged_trials": sum(t.status == "diverged" for t in result.trials),
        "sampler": spec.sampler, "sampler_seed": spec.seed, "train_seed": spec.cell.seed,
        "objective": result.objective, "val_fraction": spec.val_fraction, "space": describe(spec.space),
        "study": spec.name, "commit": git_commit(), "optuna": metadata.version("optuna"),
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
    }
