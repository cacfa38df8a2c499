"""`bpsuite` command line: list, run, reproduce, report, ui. Bad input exits with status 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from suite.errors import UsageError, lookup

LISTABLE = ("methods", "models", "datasets", "experiments", "profiles")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bpsuite", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def tracking_args(sp):
        sp.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: sqlite:///./mlruns.db, embedded)")

    def data_args(sp):
        sp.add_argument("--data-root", default=None, help="dataset root (else $BPSUITE_DATA, else ./data)")

    ls = sub.add_parser("list", help="list registered methods, models, datasets, experiments, profiles")
    ls.add_argument("what", nargs="?", default="methods", help=f"one of {', '.join(LISTABLE)}")

    run = sub.add_parser("run", help="train one cell: METHOD MODEL DATASET")
    run.add_argument("method")
    run.add_argument("model")
    run.add_argument("dataset")
    run.add_argument("--profile", default="quick")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    tracking_args(run)
    data_args(run)

    rep = sub.add_parser("reproduce", help="run the grids of experiments, then the report")
    rep.add_argument("experiments", nargs="*", help="experiment names (default: all)")
    rep.add_argument("--profile", default="quick")
    rep.add_argument("--seeds", type=int, default=1, help="repeats over seeds 0..N-1")
    rep.add_argument("--jobs", type=int, default=1, help="local worker processes (executor pool)")
    rep.add_argument("--executor", default=None, help="inprocess | pool | slurm | submitit-local")
    rep.add_argument("--slurm-partition", default=None)
    rep.add_argument("--slurm-time", type=int, default=240, help="minutes per job")
    rep.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per worker")
    rep.add_argument("--slurm-array-parallelism", type=int, default=32)
    rep.add_argument("--no-report", action="store_true")
    rep.add_argument("--results-dir", default="results")
    rep.add_argument("--figures-dir", default="paper_figures")
    tracking_args(rep)
    data_args(rep)

    rpt = sub.add_parser("report", help="write tables and figures from the logged runs")
    rpt.add_argument("experiments", nargs="*")
    rpt.add_argument("--profile", default="quick")
    rpt.add_argument("--seeds", type=int, default=1)
    rpt.add_argument("--results-dir", default="results")
    rpt.add_argument("--figures-dir", default="paper_figures")
    tracking_args(rpt)

    ui = sub.add_parser("ui", help="MLflow UI (binds to 127.0.0.1 unless --host is given)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    tracking_args(ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"list": cmd_list, "run": cmd_run, "reproduce": cmd_reproduce, "report": cmd_report,
                "ui": cmd_ui}[args.command](args)
    except UsageError as err:
        print(f"bpsuite: error: {err}", file=sys.stderr)
        return 2


def cmd_list(args) -> int:
    from suite.config import PROFILES
    from suite.data import DATASETS
    from suite.experiments import EXPERIMENTS
    from suite.methods import METHODS
    from suite.models import MODELS
    from suite.params import describe

    what = args.what
    if what not in LISTABLE:
        from suite.errors import unknown_name
        raise unknown_name("listing", what, LISTABLE)
    if what == "methods":
        for name, cls in METHODS.items():
            print(f"{name:<22} {cls.summary}")
            for key, default, doc in describe(cls.HParams):
                print(f"    {key:<20} = {default!s:<12} {doc}")
    elif what == "models":
        for name in MODELS:
            print(name)
        print("mlp:W1-W2-...[:act], cnn:act, timm:<any timm model>")
    elif what == "datasets":
        for name, spec in DATASETS.items():
            print(f"{name:<14} {spec.num_classes:>4} classes  input {'×'.join(map(str, spec.input_shape))}")
    elif what == "profiles":
        for name, values in PROFILES.items():
            print(f"{name:<8} {values}")
    else:
        for name, exp in EXPERIMENTS.items():
            counts = ", ".join(f"{p}: {len(exp.cells(p))}" for p in exp.profiles)
            print(f"{name:<20} {exp.title}\n{'':<20} reproduces: {exp.source}\n{'':<20} cells: {counts}")
    return 0


def _tracking_uri(args) -> str:
    from suite.tracking import check_reachable, default_uri
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
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
    tracker = Tracker(_tracking_uri(args))
    result = run_cell(cell, tracker, data_root=args.data_root, progress=sys.stderr.isatty())
    print(f"{cell.label}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    for key in ("test_acc", "train_loss", "epoch_time"):
        if key in result.metrics:
            print(f"  {key} = {result.metrics[key]:.4f}")
    return 0 if result.status in ("finished", "cached", "skipped", "diverged") else 1


def _selected(names):
    from suite.experiments import EXPERIMENTS
    return [lookup("experiment", EXPERIMENTS, n) for n in names] if names else list(EXPERIMENTS.values())


def validate_grid(cells, data_root) -> None:
    """Everything that can be checked before compute: names, overrides, data files, model/method fit."""
    from suite.config import resolve
    from suite.data import DATASETS, default_root
    from suite.data.sources import load_split
    from suite.methods import METHODS
    from suite.models import build_model

    configs = [resolve(c) for c in cells]
    for name in sorted({c.dataset for c in cells}):
        for train in (True, False):
            load_split(DATASETS[name], default_root(data_root), train)
    checked = set()
    for cfg in configs:
        key = (cfg.cell.method, cfg.cell.model, cfg.cell.dataset, cfg.hparams)
        if key in checked:
            continue
        checked.add(key)
        spec = DATASETS[cfg.cell.dataset]
        METHODS[cfg.cell.method](cfg.hparams).validate(build_model(cfg.cell.model, spec.input_shape, spec.num_classes))


def cmd_reproduce(args) -> int:
    from suite.executors import SlurmOptions, run_cells, warm_up
    from suite.tracking import Tracker

    if args.seeds < 1 or args.jobs < 1:
        raise UsageError("--seeds and --jobs must be at least 1")
    experiments = _selected(args.experiments)
    cells = list(dict.fromkeys(c for exp in experiments for c in exp.cells(args.profile, args.seeds)))
    executor = args.executor or ("pool" if args.jobs > 1 else "inprocess")
    warm_up(executor, args.jobs)  # starts no compute: pool workers' imports overlap the validation
    validate_grid(cells, args.data_root)
    uri = _tracking_uri(args)
    Tracker(uri)  # creates the store once, before workers race to do it
    slurm = SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_gpus, args.slurm_array_parallelism)
    print(f"reproduce: {len(experiments)} experiment(s), {len(cells)} cell(s), profile {args.profile}, "
          f"executor {executor}")
    results = run_cells(cells, uri, executor=executor, jobs=args.jobs, data_root=args.data_root, slurm=slurm,
                        progress=sys.stderr.isatty())
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status in ("failed", "diverged", "skipped"):
            print(f"  {r.cell.label}: {r.status}: {(r.reason or '').splitlines()[-1] if r.reason else ''}")
    print("cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if not args.no_report:
        _report(experiments, args.profile, args.seeds, uri, args.results_dir, args.figures_dir)
    print(f"\nResults: {Path(args.results_dir).resolve()}  figures: {Path(args.figures_dir).resolve()}\n"
          f"Browse the runs: nox -s ui  (or: bpsuite ui --tracking-uri {uri})")
    return 1 if counts.get("failed") else 0


def _report(experiments, profile, seeds, uri, results_dir, figures_dir) -> None:
    from suite.report import build_report, write_index
    from suite.tracking import Tracker

    contexts = build_report(experiments, profile, Tracker(uri), seeds, Path(results_dir), Path(figures_dir))
    write_index(contexts, Path(results_dir), Path(figures_dir))
    for ctx in contexts:
        print(f"  {ctx.name}: {len(ctx.runs)} runs -> " + ", ".join(str(p) for p in ctx.written if p.suffix != ".csv"))


def cmd_report(args) -> int:
    _report(_selected(args.experiments), args.profile, args.seeds, _tracking_uri(args), args.results_dir,
            args.figures_dir)
    return 0


def cmd_ui(args) -> int:
    from suite.tracking import default_uri
    uri = args.tracking_uri or default_uri()
    if args.host != "127.0.0.1":
        print(f"warning: the UI will be reachable from other machines on {args.host}", file=sys.stderr)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port}  ({uri})")
    return subprocess.call(cmd)
