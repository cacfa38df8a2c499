"""One study: the same number of trials for one cell's method, each trial a normal harness run.

Protocol (a suite rule, stated in docs/tuning.md):

* A trial is the cell with the trial's settings as `--set` overrides plus `val_fraction` (a part
  of the training set held out as validation), `eval_test=false` (the test split is never
  evaluated) and `measure_flops=false`. It runs through `suite.harness.run_cell`, so it is claimed
  by its cell hash, logged with its full provenance, and never run twice.
* Its score is the final epoch's validation accuracy. A `diverged` trial scores 0 (the lowest
  accuracy there is): it uses up its share of the budget like any other trial and steers the
  sampler away. A trial that fails (an exception) stops the study, which a rerun resumes.
* Sampler: Optuna's TPE, the first half of the budget (rounded up) seeded random search; or a
  grid (`space.grid_points`). The sampler of trial k is seeded from (seed, k), where k counts the
  completed trials, so a resumed study makes exactly the choices of an uninterrupted one.
  Methods with the same space get the same random start-up settings.
* Storage: an Optuna RDB store (an SQLite file beside the MLflow store). A study is named by its
  cell, budget, sampler, seed and a digest of everything else it depends on; rerunning it runs
  only the trials it still lacks. Trials left running by a killed process are marked failed and
  redone (one `bpsuite tune` per store at a time: `exclusive`).
* MLflow: one parent run per study (its settings as params, each trial's score as the metric
  `trial_val_acc`, the chosen settings as tags `chosen.<key>` and the artifact `chosen.json`),
  the trials nested under it as child runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from suite.config import Cell, resolve
from suite.errors import UsageError
from suite.params import SearchSpace
from suite.tuning import space as spaces

OBJECTIVE = "final-epoch validation accuracy"
TRIAL_SETTINGS = {"eval_test": "false", "measure_flops": "false"}
SAMPLERS = ("tpe", "grid")
MLFLOW_EXPERIMENT = "bpsuite-tuning"


@dataclass(frozen=True)
class StudySpec:
    experiment: str
    cell: Cell  # the untuned cell: training seed, profile and the experiment's own overrides
    space: dict[str, SearchSpace]
    trials: int
    seed: int  # the sampler's seed
    sampler: str = "tpe"
    val_fraction: float = 0.1

    @property
    def digest(self) -> str:
        payload = {"cell": resolve(self.cell).cell_hash, "space": spaces.describe(self.space),
                   "val_fraction": self.val_fraction, "objective": OBJECTIVE, "trial": TRIAL_SETTINGS}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def name(self) -> str:
        return (f"{self.cell.label}@{self.cell.profile}:{self.sampler}{self.trials}:seed{self.seed}:"
                f"{self.digest}")

    def trial_cell(self, settings: dict) -> Cell:
        extra = {k: spaces.as_override(v) for k, v in settings.items()}
        return self.cell.with_overrides(**extra, val_fraction=repr(self.val_fraction), **TRIAL_SETTINGS)


@dataclass
class Trial:
    number: int  # among the study's completed trials, 0-based
    settings: dict
    value: float
    status: str  # finished | diverged
    run_id: str


@dataclass
class StudyResult:
    spec: StudySpec
    status: str  # complete | skipped | incomplete
    reason: str | None = None
    trials: list[Trial] = field(default_factory=list)
    new_runs: int = 0
    seconds: float = 0.0
    parent_run_id: str | None = None

    objective: str = OBJECTIVE

    @property
    def best(self) -> Trial | None:
        """The highest score; ties go to the earliest trial. None when every trial diverged."""
        trained = [t for t in self.trials if t.status == "finished"]
        return max(trained, key=lambda t: (t.value, -t.number)) if trained else None


def startup_trials(trials: int) -> int:
    return math.ceil(trials / 2)


def default_storage(tracking_uri: str) -> str:
    """An SQLite file `tuning.db` beside an SQLite MLflow store, else in the working directory."""
    prefix = "sqlite:///"
    folder = Path(tracking_uri[len(prefix):]).parent if tracking_uri.startswith(prefix) else Path.cwd()
    return f"{prefix}{(folder / 'tuning.db').resolve()}"


@contextlib.contextmanager
def exclusive(storage_url: str):
    """Hold the store for this process: a second `bpsuite tune` on it is an error, not a race."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        fcntl = None
    prefix = "sqlite:///"
    if fcntl is None or not storage_url.startswith(prefix):
        yield
        return
    lock = Path(storage_url[len(prefix):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another `bpsuite tune` is using {storage_url}; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_study(spec: StudySpec, storage_url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.name, storage=storage_url, direction="maximize",
                               load_if_exists=True)


def completed_trials(study) -> list:
    from optuna.trial import TrialState

    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def _fail_stale(study) -> None:
    """Trials left `running` by a killed process (this process holds the store) are failed."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # an enqueued grid point
        study.tell(study.ask(), state=TrialState.FAIL)


def _sampler(spec: StudySpec, k: int):
    import optuna

    seed = zlib.crc32(f"{spec.seed}:{k}".encode())
    if spec.sampler == "grid":  # grid points are enqueued; the sampler never draws
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(spec.trials))


def _parent_run(tracker, spec: StudySpec):
    from suite.provenance import git_commit
    from suite.tracking import RunHandle

    for run in tracker.find_runs("tuning.study", spec.name):
        if run.data.tags.get("tuning.role") == "study":
            handle = RunHandle(tracker, run.info.run_id)
            handle.reopen()
            return handle
    cell = spec.cell
    handle = tracker.start_run(f"tune {cell.label}", {
        "tuning.study": spec.name, "tuning.role": "study", "experiment": spec.experiment,
        "method": cell.method, "model": cell.model, "dataset": cell.dataset, "profile": cell.profile,
        "seed": str(cell.seed), "git_commit": git_commit()})
    handle.log_params({"trials": spec.trials, "sampler": spec.sampler, "sampler_seed": spec.seed,
                       "startup_trials": startup_trials(spec.trials) if spec.sampler == "tpe" else 0,
                       "objective": OBJECTIVE, "val_fraction": spec.val_fraction,
                       "overrides": json.dumps(dict(cell.overrides), sort_keys=True),
                       **{f"space.{k}": v for k, v in spaces.describe(spec.space).items()}})
    return handle


def _outcome(tracker, cell: Cell, result) -> tuple[str, float | None, str | None]:
    """(status, score, run id) of a trial's complete run, whether it ran now or before."""
    run = tracker.completed(resolve(cell).cell_hash)
    if run is None:
        return result.status, None, result.run_id
    status = run.data.tags.get("status")
    if status == "finished":
        return status, float(run.data.metrics["val_acc"]), run.info.run_id
    if status == "diverged":
        return status, 0.0, run.info.run_id
    return status, None, run.info.run_id


def _trials(study, spec: StudySpec) -> list[Trial]:
    return [Trial(k, {key: t.params[key] for key in spec.space}, float(t.value), t.user_attrs.get("status", ""),
                  t.user_attrs.get("run_id", ""))
            for k, t in enumerate(completed_trials(study))]


def run_study(spec: StudySpec, tracker, storage_url: str, *, data_root=None, progress: bool = False,
              skip_reason: str | None = None, say=print) -> StudyResult:
    """Run the trials the study still lacks; return every completed trial."""
    from optuna.trial import TrialState

    from suite.harness import run_cell

    if skip_reason:
        return StudyResult(spec, "skipped", skip_reason)
    start = time.perf_counter()
    study = open_study(spec, storage_url)
    _fail_stale(study)
    parent = _parent_run(tracker, spec)
    children = tracker.nested_under(parent.run_id, {"tuning.study": spec.name, "tuning.role": "trial"})
    dists = spaces.distributions(spec.space)
    grid = spaces.grid_points(spec.space, spec.trials, spec.seed) if spec.sampler == "grid" else None
    result = StudyResult(spec, "complete", parent_run_id=parent.run_id)
    try:
        while (k := len(completed_trials(study))) < spec.trials:
            if grid is not None:
                study.enqueue_trial(grid[k % len(grid)])
            study.sampler = _sampler(spec, k)
            trial = study.ask(dists)
            cell = spec.trial_cell(trial.params)
            try:
                ran = run_cell(cell, children, data_root=data_root, progress=progress)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            status, value, run_id = _outcome(tracker, cell, ran)
            trial.set_user_attr("status", status)
            trial.set_user_attr("run_id", run_id or "")
            if value is None:
                study.tell(trial, state=TrialState.FAIL)
                result.status, result.reason = "incomplete", f"trial {k} ({cell.label}) {status}: {ran.reason}"
                break
            study.tell(trial, value)
            result.new_runs += ran.status != "cached"
            parent.log_metrics({"trial_val_acc": value}, step=k)
            shown = ", ".join(f"{key}={spaces.as_override(v)}" for key, v in trial.params.items())
            say(f"    trial {k + 1}/{spec.trials} {shown}: {status}, val acc {value:.4f}"
                + (" (cached)" if ran.status == "cached" else ""))
    except KeyboardInterrupt:
        parent.finish("killed", "interrupted")
        raise
    result.trials = _trials(study, spec)
    result.seconds = time.perf_counter() - start
    if result.status == "incomplete":
        parent.finish("failed", result.reason)
        return result
    best = result.best
    chosen = {k: spaces.as_override(v) for k, v in best.settings.items()} if best else {}
    parent.set_tags({f"chosen.{k}": v for k, v in chosen.items()} | {"best_trial": str(best.number) if best else "none"})
    parent.log_metrics({"best_val_acc": best.value if best else 0.0,
                        "diverged_trials": float(sum(t.status == "diverged" for t in result.trials))})
    parent.log_json("chosen.json", {"settings": chosen, "best_val_acc": best.value if best else None,
                                    "trials": [t.__dict__ for t in result.trials]})
    parent.finish("finished", None if best else "every trial diverged")
    return result
