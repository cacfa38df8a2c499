"""`bpsuite` command line: list, run, reproduce, report, tune, ui. Bad input exits with status 2."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from suite.errors import UsageError, lookup

LISTABLE = ("methods", "metrics", "models", "datasets", "experiments", "profiles")
# a rerun's own tables and figures, beside (never over) the committed results/ and paper_figures/
REPRODUCED_RESULTS = "reproduced/results"
REPRODUCED_FIGURES = "reproduced/paper_figures"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (unless the help already says it, or there is none to
    say); the examples (the epilog) kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == [] \
            or action.default == argparse.SUPPRESS
        if unset or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


EXAMPLES = {
    "list": ["bpsuite list methods", "bpsuite list methods dfa", "bpsuite list experiments"],
    "run": ["bpsuite run bp mlp mnist --profile smoke", "bpsuite run dfa cnn mnist --set lr=0.01 --epochs 5",
            "bpsuite run penalty resnet20 mnist --set stages=2 --set distributed=true"],
    "reproduce": ["bpsuite reproduce --profile smoke", "bpsuite reproduce summary --seeds 3 --jobs 2",
                  "bpsuite reproduce --tracking-uri sqlite:///results/mlruns.db   # resume the committed grid"],
    "report": ["bpsuite report --tracking-uri sqlite:///results/mlruns.db --seeds 3 --profile best",
               "bpsuite report summary --results-dir /tmp/r --figures-dir /tmp/f"],
    "tune": ["bpsuite tune summary --profile smoke --trials 2 --methods bp --models mlp --results-dir /tmp/t"],
    "migrate": ["bpsuite migrate --tracking-uri sqlite:///old.db"],
    "ui": ["bpsuite ui", "bpsuite ui --tracking-uri sqlite:///mlruns.db --port 5001"],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bpsuite", description=__doc__,
                                epilog="`bpsuite COMMAND --help` for each command's options and examples.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def command(name: str, help: str):
        """A subcommand whose help page has a description, each option's default and examples."""
        return add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                          formatter_class=_HelpFormatter,
                          epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name]))

    sub.add_parser = command

    def tracking_args(sp):
        sp.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI: sqlite:///PATH, http(s)://HOST:PORT (default: $MLFLOW_TRACKING_URI, "
                             "else sqlite:///./mlruns.db; for `ui` and with no ./mlruns.db: the committed runs)")

    def data_args(sp):
        sp.add_argument("--data-root", default=None, help="dataset root (else $BPSUITE_DATA, else ./data)")

    ls = sub.add_parser("list", help="list registered methods, models, datasets, experiments, profiles")
    ls.add_argument("what", nargs="?", default="methods", help=f"one of {', '.join(LISTABLE)}")
    ls.add_argument("name", nargs="?", default=None,
                    help="with `methods`: one method, every setting of it (e.g. `bpsuite list methods dfa`)")

    run = sub.add_parser("run", help="train one cell: METHOD MODEL DATASET")
    run.add_argument("method", help="a registered method (bpsuite list methods)")
    run.add_argument("model", help="a model name or spec (bpsuite list models)")
    run.add_argument("dataset", help="a dataset (bpsuite list datasets)")
    run.add_argument("--profile", default="quick", help="budget profile (bpsuite list profiles)")
    run.add_argument("--seed", type=int, default=0, help="the cell's seed (weights, batches, feedback)")
    run.add_argument("--epochs", type=int, default=None, help="training epochs (default: the profile's)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a run setting or method setting, one per flag (repeat --set for more)")
    tracking_args(run)
    data_args(run)

    rep = sub.add_parser("reproduce", help="run the grids of experiments, then the report")
    rep.add_argument("experiments", nargs="*", help="experiment names (default: all)")
    rep.add_argument("--profile", default="quick", help="budget profile (bpsuite list profiles)")
    rep.add_argument("--seeds", type=int, default=1, help="repeats over seeds 0..N-1")
    rep.add_argument("--jobs", type=int, default=1, help="local worker processes (executor pool)")
    rep.add_argument("--executor", default=None, help="inprocess | pool | slurm | submitit-local")
    rep.add_argument("--slurm-partition", default=None, help="Slurm partition (--executor slurm)")
    rep.add_argument("--slurm-time", type=int, default=240, help="minutes per job")
    rep.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per worker")
    rep.add_argument("--slurm-array-parallelism", type=int, default=32, help="Slurm jobs running at once")
    rep.add_argument("--no-report", action="store_true", help="train only; write no tables or figures")
    rep.add_argument("--results-dir", default=REPRODUCED_RESULTS,
                     help=f"where the report's tables go (default {REPRODUCED_RESULTS}: a rerun never "
                          f"touches the committed results/; `nox -s figures` rebuilds those)")
    rep.add_argument("--figures-dir", default=REPRODUCED_FIGURES, help="where the report's figures go")
    rep.add_argument("--retrain-other-commits", action="store_true",
                     help="retrain every cell whose complete run was trained at another commit or from a dirty "
                          "tree (the old runs stay, tagged superseded), so the grid's runs share this clean "
                          "commit")
    rep.add_argument("--force", action="store_true",
                     help="let the report replace tables built from more runs than this grid can give")
    rep.add_argument("--settings", default="tuned", choices=("defaults", "tuned"),
                     help="tuned (default): cells with an entry in baselines/tuned-settings.json run at its "
                          "settings (experiments that opt in: summary); defaults: never")
    tracking_args(rep)
    data_args(rep)

    rpt = sub.add_parser("report", help="write tables and figures from the logged runs")
    rpt.add_argument("experiments", nargs="*", help="experiment names (default: all)")
    rpt.add_argument("--profile", default="quick",
                     help="the profile to report, or best: each experiment at the highest profile (paper, verify, "
                          "quick) whose whole grid has complete runs (`nox -s figures` uses it)")
    rpt.add_argument("--seeds", type=int, default=1, help="the seeds 0..N-1 each cell is reported over")
    rpt.add_argument("--results-dir", default="results", help="where the tables go")
    rpt.add_argument("--figures-dir", default="paper_figures", help="where the figures go")
    rpt.add_argument("--force", action="store_true",
                     help="replace tables even when the store holds fewer runs than they were built from")
    rpt.add_argument("--settings", default="tuned", choices=("defaults", "tuned"),
                     help="tuned (default): cells with an entry in baselines/tuned-settings.json run at its "
                          "settings (experiments that opt in: summary); defaults: never")
    tracking_args(rpt)

    tun = sub.add_parser("tune", help="tune every method of an experiment's cells with the same number of "
                         "trials on a validation split; write the chosen settings and the report")
    tun.add_argument("experiment", nargs="?", default="summary", help="the experiment whose cells are tuned")
    tun.add_argument("--profile", default="quick", help="budget profile of the trials")
    tun.add_argument("--trials", type=int, default=8, help="trials per method and cell (the same for every method)")
    tun.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    tun.add_argument("--sampler", default="grid", help="grid (the default: with one searched parameter, "
                     "evenly log-spaced values cover its range) or tpe (the first half of the trials seeded "
                     "random search, then TPE)")
    tun.add_argument("--val-fraction", type=float, default=0.1,
                     help="part of the training set held out as the validation split the trials are scored on")
    tun.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                     help="change a search space: log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, choice:A,B or fixed")
    tun.add_argument("--methods", default=None, help="comma-separated methods (default: all of the experiment's)")
    tun.add_argument("--models", default=None, help="comma-separated models (default: all of the experiment's)")
    tun.add_argument("--settings-file", default=None, help="default: baselines/tuned-settings.json")
    tun.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite tuning.db beside the "
                     "MLflow store)")
    tun.add_argument("--results-dir", default="results", help="where the tuning table goes")
    tun.add_argument("--figures-dir", default="paper_figures", help="where the sensitivity figure goes")
    tun.add_argument("--force", action="store_true",
                     help="let the report replace a tuning table that holds more studies than this call plans")
    tracking_args(tun)
    data_args(tun)

    mig = sub.add_parser("migrate", help="rename metric keys logged before the metrics had namespaces "
                                         "(suite/metrics.py) in an existing SQLite MLflow store")
    tracking_args(mig)

    ui = sub.add_parser("ui", help="MLflow UI over ./mlruns.db, else the committed runs (results/mlruns.db), "
                        "unless --tracking-uri says; binds to 127.0.0.1 unless --host is given")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (other than 127.0.0.1: reachable "
                    "from other machines)")
    ui.add_argument("--port", type=int, default=5000, help="TCP port, 1–65535")
    tracking_args(ui)
    return p


def main(argv: list[str] | None = None) -> int:
    from suite.shutdown import ending_children, received_signal

    args = build_parser().parse_args(argv)
    absolute_paths(args)
    # SIGTERM/SIGHUP/SIGINT or an error end every process the command started (pool, stage and
    # MGRIT workers, MLflow's server) instead of leaving them orphaned
    with ending_children():
        try:
            return {"list": cmd_list, "run": cmd_run, "reproduce": cmd_reproduce, "report": cmd_report,
                    "tune": cmd_tune, "migrate": cmd_migrate, "ui": cmd_ui}[args.command](args)
        except UsageError as err:
            print(f"bpsuite: error: {err}", file=sys.stderr)
            return 2
        except Exception as err:
            from suite.store import store_problem
            problem = store_problem(err)
            if problem is None:
                raise
            print(f"bpsuite: error: {problem}. Runs already logged are unchanged (SQLite rolls a failed "
                  f"write back); a cell cut short is redone by the next call.", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            signum = received_signal() or signal.SIGINT
            print(f"bpsuite: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum


def absolute_paths(args) -> None:
    """Paths from the command line and the environment, made absolute once, at start-up: a relative
    data root, store or output folder then means the same in every worker process and after any
    change of directory."""
    from suite.tracking import absolute_uri

    for key in ("data_root", "results_dir", "figures_dir", "settings_file"):
        if getattr(args, key, None):
            setattr(args, key, str(Path(getattr(args, key)).expanduser().resolve()))
    for key in ("tracking_uri", "storage"):  # SQLite URLs (MLflow's store, Optuna's storage)
        if getattr(args, key, None):
            setattr(args, key, absolute_uri(getattr(args, key)))
    if os.environ.get("BPSUITE_DATA"):
        os.environ["BPSUITE_DATA"] = str(Path(os.environ["BPSUITE_DATA"]).expanduser().resolve())
    if os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = absolute_uri(os.environ["MLFLOW_TRACKING_URI"])


def cmd_list(args) -> int:
    """Each listing imports only its own registry, so `bpsuite list profiles` does not pay for
    torch, torchvision and seaborn."""
    what = args.what
    if what not in LISTABLE:
        from suite.errors import unknown_name
        raise unknown_name("listing", what, LISTABLE)
    if args.name is not None and what != "methods":
        raise UsageError(f"`bpsuite list {what}` takes no name; only `bpsuite list methods NAME` does")
    {"methods": _list_methods, "metrics": _list_metrics, "models": _list_models, "datasets": _list_datasets,
     "profiles": _list_profiles, "experiments": _list_experiments}[what](args)
    return 0


def _list_methods(args) -> None:
    from suite.methods import METHODS
    from suite.methods.optim import OptimHParams
    from suite.params import describe, search_space

    def settings(cls, skip=()):
        tuned = search_space(cls)
        for key, default, doc in describe(cls):
            if key not in skip:
                how = f"  [tune: {tuned[key]}]" if key in tuned else ""
                print(f"    {key:<20} = {default!s:<12} {doc}{how}")

    if args.name is not None:
        cls = lookup("method", METHODS, args.name)
        print(f"{args.name:<22} {cls.summary}")
        if getattr(cls, "source", ""):
            print(f"{'':<22} source: {cls.source}")
        settings(cls.HParams)
        return
    shared = {key: default for key, default, _ in describe(OptimHParams)}
    for name, cls in METHODS.items():
        own = {key: default for key, default, _ in describe(cls.HParams)}
        # the optimiser settings are listed once below; a method shows those it sets otherwise
        same = {k for k, v in shared.items() if k in own and own[k] == v}
        print(f"{name:<22} {cls.summary}" + ("  (+ the optimiser settings)" if same else ""))
        settings(cls.HParams, skip=same)
    print("\noptimiser settings (every method marked `+ the optimiser settings`, at these defaults "
          "unless listed under it):")
    settings(OptimHParams)
    print("\nEvery setting of one method: bpsuite list methods NAME")


def _list_metrics(args) -> None:
    from suite.methods import METHODS
    from suite.metrics import HARNESS
    for owner, metrics in [("every run (harness)", HARNESS)] + [(n, c.METRICS) for n, c in METHODS.items()]:
        if metrics:
            print(owner)
            for m in metrics:
                print(f"    {m.key:<34} {m.unit:<9} {m.kind:<9} {m.doc}")


def _list_models(args) -> None:
    from suite.models import MODELS
    for name in MODELS:
        print(name)
    print("with options: mlp:W1-W2-...[:act], cnn:act, bottleneck:k, odenet:..., transfer:W1-W2-..., "
          "timm:<any timm model>[:zero_init_last=false] (docs/design.md, Models)")


def _list_datasets(args) -> None:
    from suite.data.sources import DATASETS
    for name, spec in DATASETS.items():
        print(f"{name:<14} {spec.num_classes:>4} classes  input {'×'.join(map(str, spec.input_shape))}")


def _list_profiles(args) -> None:
    from suite.config import PROFILES
    for name, values in PROFILES.items():
        print(f"{name:<8} {values}")


def _list_experiments(args) -> None:
    from suite.experiments import EXPERIMENTS
    for name, exp in EXPERIMENTS.items():
        counts = ", ".join(f"{p}: {len(exp.cells(p))}" for p in exp.profiles)
        print(f"{name:<20} {exp.title}\n{'':<20} reproduces: {exp.source}\n{'':<20} cells: {counts}")


def cmd_migrate(args) -> int:
    from suite.migrate import migrate_metric_keys, migrate_run_statuses
    from suite.store import check_store_to_write
    uri = _tracking_uri(args, write=False)
    check_store_to_write(uri)
    renamed = migrate_metric_keys(uri)
    for key, runs in sorted(renamed.items()):
        print(f"{key:<34} renamed in {runs} run(s)")
    print(f"migrate: {sum(renamed.values())} key(s) renamed in {uri}" if renamed else f"migrate: nothing to rename in {uri}")
    statuses = migrate_run_statuses(uri)
    for status, runs in sorted(statuses.items()):
        print(f"{status:<34} MLflow status set in {runs} run(s)")
    return 0


def _tracking_uri(args, write: bool = True) -> str:
    """The command's store, checked before any compute: its form, and that it can be written
    (`write`) or exists as an MLflow store to read."""
    from suite.store import check_store_to_read, check_store_to_write
    from suite.tracking import check_reachable, default_uri
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    (check_store_to_write if write else check_store_to_read)(uri)
    check_reachable(uri)
    return uri


def cmd_run(args) -> int:
    from suite.config import Cell, resolve
    from suite.harness import prepare, run_cell
    from suite.params import parse_assignments
    from suite.tracking import Tracker

    overrides = parse_assignments(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = str(args.epochs)
    cell = Cell(args.method, args.model, args.dataset, args.seed, args.profile,
                tuple(sorted(overrides.items())))
    cfg = resolve(cell)
    prepare(cfg, args.data_root)  # bad model/method/data combinations fail here, before logging
    uri = _tracking_uri(args)
    tracker = Tracker(uri)
    print(f"run {cell.label}: {cfg.train.epochs} epoch(s), profile {cell.profile}, store {uri}", flush=True)
    result = run_cell(cell, tracker, data_root=args.data_root, on_epoch=print_epoch)
    print(f"{cell.label}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    if result.run_id:
        print(f"  run id {result.run_id}; browse it: bpsuite ui --tracking-uri {uri}")
    return 0 if result.status in ("finished", "cached", "skipped", "diverged") else 1


def print_epoch(epoch: int, epochs: int, metrics: dict[str, float]) -> None:
    """One line per epoch, accuracies in % (the unit of every table)."""
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {metrics['train_loss']:.4f}"]
    parts += [f"{name} {100 * metrics[key]:.2f}%" for key, name in
              (("train_acc", "train acc"), ("val_acc", "val acc"), ("test_acc", "test acc")) if key in metrics]
    parts.append(f"{metrics['epoch_time']:.2f} s")
    print("  " + "  ".join(parts), flush=True)


def _selected(names):
    from suite.experiments import EXPERIMENTS
    return [lookup("experiment", EXPERIMENTS, n) for n in names] if names else list(EXPERIMENTS.values())


def validate_grid(cells, data_root) -> None:
    """Everything that can be checked before compute: names, overrides, data files, model/method fit."""
    from suite.config import resolve
    from suite.data import DATASETS, default_root, split_sizes
    from suite.data.sources import load_split
    from suite.harness import pick_device
    from suite.methods import METHODS
    from suite.models import build_model

    configs = [resolve(c) for c in cells]
    sizes = {}  # dataset -> (training images, test images)
    for name in sorted({c.dataset for c in cells}):
        sizes[name] = tuple(len(load_split(DATASETS[name], default_root(data_root), train)[1])
                            for train in (True, False))
    checked = set()
    for cfg in configs:
        key = (cfg.cell.method, cfg.cell.model, cfg.cell.dataset, cfg.hparams, cfg.train)
        if key in checked:
            continue
        checked.add(key)
        # sizes the data cannot give (the rule: suite.data), before any store is created
        split_sizes(cfg.cell.dataset, cfg.train, *sizes[cfg.cell.dataset], {k for k, _ in cfg.cell.overrides})
        spec = DATASETS[cfg.cell.dataset]
        model = build_model(cfg.cell.model, spec.input_shape, spec.num_classes)
        METHODS[cfg.cell.method](cfg.hparams).reject_settings(model, cfg.train, pick_device(cfg.train.device))


def cmd_reproduce(args) -> int:
    from suite.executors import SlurmOptions, run_cells, warm_up
    from suite.tracking import Tracker
    _use_settings(args)

    if args.seeds < 1 or args.jobs < 1:
        raise UsageError("--seeds and --jobs must be at least 1")
    executor = args.executor or ("pool" if args.jobs > 1 else "inprocess")
    check_executor(executor)
    experiments = _selected(args.experiments)
    cells = list(dict.fromkeys(c for exp in experiments for c in exp.cells(args.profile, args.seeds)))
    uri = _tracking_uri(args)
    if not args.no_report:
        _check_report_outputs(args, experiments, uri)
    warm_up(executor, args.jobs)  # starts no compute: pool workers' imports overlap the validation
    validate_grid(cells, args.data_root)
    if args.retrain_other_commits:
        current = clean_commit_or_stop()
    else:
        warn_if_dirty()
    tracker = Tracker(uri)  # creates the store once, before workers race to do it
    if args.retrain_other_commits:
        retire_other_commits(tracker, cells, current)
    cached = cached_cells(tracker, cells)
    if cached:  # recognised here, not by starting a worker per cell
        print(f"reproduce: {len(cached)} of {len(cells)} cell(s) already complete in the store (cached)")
        cells = [c for c in cells if c not in cached]
    slurm = SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_gpus, args.slurm_array_parallelism)
    print(f"reproduce: {len(experiments)} experiment(s), {len(cells)} cell(s), profile {args.profile}, "
          f"executor {executor}")
    results = run_cells(cells, uri, executor=executor, jobs=args.jobs, data_root=args.data_root, slurm=slurm,
                        progress=True) if cells else []
    counts: dict[str, int] = {"cached": len(cached)} if cached else {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status in ("failed", "diverged", "skipped"):
            print(f"  {r.cell.label}: {r.status}: {(r.reason or '').splitlines()[-1] if r.reason else ''}")
    print("cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if not args.no_report:
        _report(experiments, args.profile, args.seeds, uri, args.results_dir, args.figures_dir, args.force)
    print(f"\nResults: {Path(args.results_dir).resolve()}  figures: {Path(args.figures_dir).resolve()}\n"
          f"Browse the runs: nox -s ui  (or: bpsuite ui --tracking-uri {uri})")
    return 1 if counts.get("failed") else 0


def warn_if_dirty() -> None:
    """Runs trained from uncommitted code are tagged `<commit>-dirty`: their code is not in git,
    so say it before training, not after."""
    from suite.provenance import git_commit
    commit = git_commit()
    if commit.endswith("-dirty"):
        print(f"bpsuite: warning: the work tree has uncommitted changes; these runs will be tagged "
              f"{commit[:12]}…-dirty and their code will not be in git. Commit first for runs that results/ "
              f"can rest on.", file=sys.stderr, flush=True)


def clean_commit_or_stop() -> str:
    """The commit of a clean work tree; a dirty one is an error (retraining from it would only
    replace runs with others whose code is not in git)."""
    from suite.provenance import git_commit
    commit = git_commit()
    if commit.endswith("-dirty") or commit == "unknown":
        raise UsageError(f"--retrain-other-commits needs a clean git work tree (this one is {commit[:12]}…"
                         f"{'-dirty' if commit.endswith('-dirty') else ''}): commit first, or train from a "
                         f"clean checkout (git worktree add DIR HEAD)")
    return commit


def retire_other_commits(tracker, cells, commit: str) -> None:
    """Tag `superseded` every complete run of `cells` trained at another commit or from a dirty
    tree, so that the grid is retrained here and all its runs come from `commit`."""
    from suite.config import resolve
    from suite.tracking import COMPLETE

    runs = tracker.runs_frame(sorted({resolve(c).cell_hash for c in cells}))
    if runs.empty:
        return
    stale = runs[runs["status"].isin(COMPLETE) & (runs["git_commit"] != commit)]
    if len(stale):
        tracker.supersede(list(stale["run_id"]), f"retrained at {commit} (bpsuite reproduce --retrain-other-commits)")
        print(f"reproduce: {len(stale)} complete run(s) from other commits or dirty trees tagged superseded; "
              f"their cells are retrained at {commit[:7]}")


def cached_cells(tracker, cells) -> set:
    """The cells that already have a complete run in the store: one query for the whole grid."""
    from suite.config import resolve
    from suite.tracking import COMPLETE

    hashes = {resolve(c).cell_hash: c for c in cells}
    runs = tracker.runs_frame(sorted(hashes))
    if runs.empty:
        return set()
    done = set(runs.loc[runs["status"].isin(COMPLETE), "cell_hash"])
    return {cell for h, cell in hashes.items() if h in done}


def check_executor(executor: str) -> None:
    """An unknown executor, or Slurm where this machine cannot submit to it, before any compute."""
    import shutil

    from suite.executors import EXECUTORS
    if executor not in EXECUTORS:
        from suite.errors import unknown_name
        raise unknown_name("executor", executor, EXECUTORS)
    if executor == "slurm" and not shutil.which("sbatch"):
        raise UsageError("--executor slurm needs Slurm's `sbatch` on PATH, and this machine has none; run on a "
                         "Slurm login node, or use --executor pool --jobs N here (submitit-local tests the "
                         "Slurm path locally)")


def _check_report_outputs(args, experiments, uri) -> None:
    """Before a grid trains: the report's folders can be written, and the report will not have to
    replace tables built from more runs than this grid has cells (that would fail after compute)."""
    from suite.outputs import check_output_dir
    from suite.report.build import recorded_runs

    check_output_dir(args.results_dir, "--results-dir")
    check_output_dir(args.figures_dir, "--figures-dir")
    before = recorded_runs(Path(args.results_dir))
    fewer = [(exp.name, len(exp.cells(args.profile, args.seeds)), before[exp.name]) for exp in experiments
             if exp.report is not None and len(exp.cells(args.profile, args.seeds)) < before.get(exp.name, 0)]
    if fewer and not args.force:
        lines = "; ".join(f"{name}: {n} cell(s), the tables hold {was} run(s)" for name, n, was in fewer)
        raise UsageError(f"this grid's report would replace tables in {args.results_dir} with ones built from "
                         f"fewer runs ({lines}). Nothing was run. Write elsewhere with --results-dir DIR "
                         f"--figures-dir DIR, or pass --force to replace them")


def _report(experiments, profile, seeds, uri, results_dir, figures_dir, force=False) -> None:
    from suite.outputs import check_output_dir
    from suite.report.build import build_report, write_index
    from suite.tracking import Tracker

    check_output_dir(results_dir, "--results-dir")
    check_output_dir(figures_dir, "--figures-dir")
    # read-only: a report cannot change the store it reads (nor create one from a mistyped path)
    contexts = build_report(experiments, profile, Tracker(uri, read_only=True), seeds, Path(results_dir),
                            Path(figures_dir), force=force)
    write_index(contexts, Path(results_dir), Path(figures_dir))
    for ctx in contexts:
        print(f"  {ctx.name}: {len(ctx.runs)} runs -> " + ", ".join(str(p) for p in ctx.written if p.suffix != ".csv"))
    verdicts: dict[str, int] = {}
    for ctx in contexts:
        for row in ctx.verdicts:
            verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    if verdicts:
        print("verdicts of these runs: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
              + f" ({Path(results_dir) / 'verdicts.md'})")


def cmd_report(args) -> int:
    from suite.config import PROFILES
    from suite.report.build import BEST
    if args.profile not in (*PROFILES, BEST):
        from suite.errors import unknown_name
        raise unknown_name("profile", args.profile, [*PROFILES, BEST])
    _use_settings(args)
    _report(_selected(args.experiments), args.profile, args.seeds, _tracking_uri(args, write=False),
            args.results_dir, args.figures_dir, args.force)
    return 0


def _use_settings(args) -> None:
    from suite.tuning.settings import select
    select(args.settings)


def _check_tuning_table(table: Path, studies: int, force: bool) -> None:
    """`tune`'s report is written from this call's studies alone: a call with fewer studies (e.g.
    `--methods bp`) would replace a table of more, so that needs `force`, like `report`."""
    if force or not table.exists():
        return
    import pandas as pd
    try:
        rows = len(pd.read_csv(table))
    except (ValueError, OSError):
        return  # not a table this suite wrote: nothing of value is lost by replacing it
    if studies < rows:
        raise UsageError(f"this call plans {studies} studies, and its report would replace {table}, which "
                         f"holds {rows}. Nothing was run. Write elsewhere with --results-dir DIR --figures-dir "
                         f"DIR, or pass --force to replace it")


def cmd_tune(args) -> int:
    import time

    from suite.outputs import check_output_dir, check_output_file
    from suite.store import check_storage
    from suite.tracking import Tracker
    from suite.tuning import settings
    from suite.tuning.plan import plan
    from suite.tuning.report import write_report
    from suite.tuning.space import describe, parse_spaces
    from suite.tuning.study import MLFLOW_EXPERIMENT, default_storage, exclusive, run_study

    def names(text):
        return [n.strip() for n in text.split(",") if n.strip()] if text else None

    uri = _tracking_uri(args)
    storage = args.storage or default_storage(uri)
    path = Path(args.settings_file).expanduser().resolve() if args.settings_file else settings.TUNED_SETTINGS
    check_storage(storage)
    check_output_file(path, "--settings-file")
    settings.load(path)  # an existing file must be a tuned-settings file: checked now, not after the studies
    check_output_dir(args.results_dir, "--results-dir")
    check_output_dir(args.figures_dir, "--figures-dir")
    planned = plan(args.experiment, args.profile, trials=args.trials, seed=args.seed, sampler=args.sampler,
                   val_fraction=args.val_fraction, changes=parse_spaces(args.space), methods=names(args.methods),
                   models=names(args.models), data_root=args.data_root)
    _check_tuning_table(Path(args.results_dir) / f"tuning-{args.experiment}.csv", len(planned), args.force)
    tracker = Tracker(uri, experiment=MLFLOW_EXPERIMENT)
    print(f"tune {args.experiment}: {len(planned)} studies, {args.trials} trials each ({args.sampler}, seed "
          f"{args.seed}), profile {args.profile}, validation {args.val_fraction:.0%} of the training set\n"
          f"  studies: {storage}\n  runs: {uri} (MLflow experiment {MLFLOW_EXPERIMENT})")
    results, start = [], time.perf_counter()
    with exclusive(storage):
        for i, item in enumerate(planned, 1):
            spec = item.spec
            print(f"[{i}/{len(planned)}] {spec.cell.label}: " + (f"skipped ({item.skip_reason})" if item.skip_reason
                  else "; ".join(f"{k} {s}" for k, s in describe(spec.space).items()) or "nothing to tune"), flush=True)
            result = run_study(spec, tracker, storage, data_root=args.data_root, progress=sys.stderr.isatty(),
                               skip_reason=item.skip_reason)
            results.append(result)
            entry = settings.entry_from(result)
            if entry:
                settings.upsert(path, entry, result.new_runs)
            if result.status != "skipped":
                best = result.best
                print(f"    {result.status}: {result.new_runs} new run(s) in {result.seconds:.1f} s; "
                      + (f"chosen {entry['settings']} (val acc {best.value:.4f})" if entry else result.reason
                         or "every trial diverged: nothing written"), flush=True)
    ctx = write_report(args.experiment, args.profile, results, Path(args.results_dir), Path(args.figures_dir))
    print(f"tune: {time.perf_counter() - start:.0f} s; settings: {path}; report: "
          + ", ".join(str(p) for p in ctx.written if p.suffix != ".csv"))
    return 1 if any(r.status == "incomplete" for r in results) else 0


def check_port(host: str, port: int) -> None:
    """A port out of range or already taken is an error before the server starts (it would
    otherwise fail inside MLflow, after the command had said where the UI is)."""
    import socket
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port: choose 1–65535 (default 5000)")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UsageError(f"cannot serve on {host}:{port} ({err.strerror}); another program may hold the "
                             f"port: choose another with --port") from None


# the committed runs behind results/, found from this file (the repository), not the working directory
COMMITTED_STORE = Path(__file__).resolve().parents[1] / "results" / "mlruns.db"


def ui_store(local_uri: str) -> str:
    """What `bpsuite ui` serves without --tracking-uri or $MLFLOW_TRACKING_URI: the working
    directory's store if there is one (what `bpsuite run`/`reproduce` just wrote), else the
    committed runs (never a new, empty store)."""
    return served_store(None, {}, local_uri)[0]


def served_store(tracking_uri: str | None, environ, local_uri: str) -> tuple[str, str]:
    """(the store `bpsuite ui` serves, where that choice came from): --tracking-uri, else
    $MLFLOW_TRACKING_URI, else ./mlruns.db when it exists, else the committed runs
    (results/mlruns.db of this repository)."""
    from suite.store import sqlite_path
    if tracking_uri:
        return tracking_uri, "--tracking-uri"
    if environ.get("MLFLOW_TRACKING_URI"):
        return environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI"
    if sqlite_path(local_uri).exists() or not COMMITTED_STORE.exists():
        return local_uri, "this directory's store, ./mlruns.db"
    return f"sqlite:///{COMMITTED_STORE}", "the committed runs: no ./mlruns.db here"


def cmd_ui(args) -> int:
    from suite.shutdown import die_with_this_process, end_group, group_watchdog
    from suite.store import check_store_to_read
    from suite.tracking import default_uri
    uri, origin = served_store(args.tracking_uri, os.environ, default_uri())
    check_store_to_read(uri)
    check_port(args.host, args.port)
    if args.host != "127.0.0.1":
        print(f"warning: the UI will be reachable from other machines on {args.host}", file=sys.stderr)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port}, serving {uri} ({origin})", flush=True)
    # its own session, so that the server and the workers it forks can be ended as one group.
    # Should this process die without ending them (SIGKILL), a watchdog ends the group: SIGTERM to
    # the server alone is not enough (it forwards it to uvicorn, but the huey consumers of MLflow's
    # job runner and the server's CLI ran on for 40 s and more). The server gets SIGTERM too, from the kernel
    # (PR_SET_PDEATHSIG), should the watchdog be gone: started from the main thread, which lives as
    # long as this process (the signal comes when the creating *thread* exits); preexec_fn is safe
    # here, this process runs no other thread.
    server = subprocess.Popen(cmd, start_new_session=True, preexec_fn=die_with_this_process(signal.SIGTERM))
    watchdog = None
    try:
        watchdog = group_watchdog(server.pid)
        return server.wait()
    finally:
        end_group(server)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
