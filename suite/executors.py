"""Runs a list of cells: in-process, a local process pool, or Slurm through submitit.

Every executor calls the same `harness.run_cell`; cells are independent, and the tracking store
decides which are still to do (a rerun redoes only what is not complete). A cell whose method
needs K processes (`Method.workers`) reserves K slots: the pool runs such cells one at a time
after the single-process ones, and Slurm jobs ask for K CPUs (or GPUs) per task.

Scheduling never changes what a cell computes: each run fixes its own intra-op thread count
(the run setting `threads`), so `--jobs 1` and `--jobs N` give bitwise-identical results; `--jobs`
only decides how many cells run at once. When the command is interrupted or terminated, the
pool's workers are terminated with it (their runs end as `killed`); when it is SIGKILLed, the
kernel ends them (`_pool_worker_init`; their runs are marked `killed` by the next claim of the
cell, which finds their pid dead).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from suite.config import Cell, resolve
from suite.harness import CellResult
from suite.methods import METHODS
from suite.progress import GridProgress
from suite.shutdown import die_with_parent, parent_of

EXECUTORS = ("inprocess", "pool", "slurm", "submitit-local")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 240
    gpus_per_job: int = 0
    array_parallelism: int = 32
    folder: str = "slurm_logs"


def workers_needed(cell: Cell) -> int:
    return METHODS[cell.method].workers(resolve(cell).hparams)


def _run_one(cell: Cell, tracking_uri: str, data_root) -> CellResult:
    """Entry point in a worker process (pool or Slurm): its own tracker; the run sets its threads."""
    from suite.harness import run_cell
    from suite.tracking import Tracker

    return run_cell(cell, Tracker(tracking_uri), data_root=data_root)


def terminate_as_interrupt() -> None:
    """SIGTERM (a process manager, a Slurm job's end, the pool shutting down) raises
    KeyboardInterrupt like Ctrl-C, so the harness logs the run as `killed` and children end."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _pool_worker_init(command: int) -> None:
    """A pool worker's initializer: SIGTERM as Ctrl-C (`terminate_as_interrupt`), and an end with
    the command (pid `command`) even when it is SIGKILLed: SIGKILL when the worker's parent, the
    fork server, dies, which it does with the command (`_start_fork_server`). Should either have
    died before prctl ran, the worker exits now: its parent is then neither the command nor a
    child of it.

    PR_SET_PDEATHSIG fires when the parent *thread* exits: a worker is forked by the fork server's
    only thread, whichever thread of the command asks for it (the executor's manager thread starts
    the replacements), so nothing but the fork server's end fires it. (Spawn, where the asking
    thread would be the parent, is used only where there is no fork server: never on Linux.)"""
    terminate_as_interrupt()
    if die_with_parent(signal.SIGKILL) and command not in (os.getppid(), parent_of(os.getppid())):
        os._exit(128 + signal.SIGKILL)


def run_cells(cells: Sequence[Cell], tracking_uri: str, *, executor: str = "inprocess", jobs: int = 1,
              data_root=None, progress: bool = True, slurm: SlurmOptions | None = None,
              on_result: Callable[[CellResult], None] | None = None) -> list[CellResult]:
    if executor not in EXECUTORS:
        from suite.errors import unknown_name
        raise unknown_name("executor", executor, EXECUTORS)
    if executor == "pool":  # longest first, so the last cells to finish are short ones
        cells = sorted(cells, key=estimated_cost, reverse=True)
    report = None
    if progress:
        report = GridProgress([c.label for c in cells], [estimated_cost(c) for c in cells], jobs=jobs)

    def done(result: CellResult) -> None:
        if report is not None:
            report.update(result)
        if on_result is not None:
            on_result(result)

    try:
        if executor == "inprocess":
            return _inprocess(cells, tracking_uri, data_root, done)
        if executor == "pool":
            return _pool(cells, tracking_uri, jobs, data_root, done)
        return _submitit(cells, tracking_uri, data_root, slurm or SlurmOptions(), executor == "submitit-local", done)
    finally:
        if report is not None:
            report.close()


def _inprocess(cells, uri, data_root, done):
    from suite.harness import run_cell
    from suite.tracking import Tracker

    tracker, results = Tracker(uri), []
    for cell in cells:
        results.append(run_cell(cell, tracker, data_root=data_root))
        done(results[-1])
    return results


@functools.lru_cache(maxsize=64)
def _forward_flops(model_name: str, dataset: str) -> float:
    """FLOPs of one sample's forward pass: the model's share of a cell's cost."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from suite.data import DATASETS
    from suite.models import build_model

    spec = DATASETS[dataset]
    model = build_model(model_name, spec.input_shape, spec.num_classes).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *spec.input_shape))
    return float(counter.get_total_flops()) or 1.0


def estimated_cost(cell: Cell) -> float:
    """Epochs × training samples × forward FLOPs per sample × the method's relative step cost:
    enough to order a grid longest first (models and run lengths differ by orders of magnitude,
    most methods by small factors, MGRIT by several)."""
    cfg = resolve(cell)
    samples = (cfg.train.train_subset or 50_000) * cfg.train.train_fraction
    method = METHODS[cell.method]
    return cfg.train.epochs * samples * _forward_flops(cell.model, cell.dataset) * method.relative_cost(cfg.hparams)


# what a pool worker needs imported: torch, mlflow, the harness (a few seconds on 2 cores); first
# suite.shutdown, which is quick to import and arms the fork server's parent-death signal
# (`_start_fork_server`) before the rest
POOL_PRELOAD = ["suite.shutdown", "suite.harness", "suite.executors"]


def _pool_context():
    """Workers forked from a fork server that has the suite imported once (spawn where there is
    no fork server, e.g. Windows). Forking the server, not this process, keeps the workers clear
    of this process's thread pools."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(POOL_PRELOAD)
    return ctx


def _start_fork_server() -> None:
    """Start the fork server (`_pool_context` must have set its preload list) unless it runs.

    Started from the main thread, it gets SIGKILL when this process dies, SIGKILL included (its
    workers then get theirs: `_pool_worker_init`): the environment variable set around its start
    tells its first preloaded module, suite.shutdown, to call `die_with_parent` (and is dropped
    there, so its workers do not inherit it). Not from another thread: PR_SET_PDEATHSIG fires when
    the parent *thread* exits, and the fork server outlives the thread that needed it first.
    Unarmed, the fork server would outlive a SIGKILLed command as long as a worker of it runs:
    it ends only when every copy of its "alive" pipe is closed, and its workers hold one each."""
    import threading
    from multiprocessing import forkserver

    from suite.shutdown import FORK_SERVER_PARENT

    armed = threading.current_thread() is threading.main_thread()
    if armed:
        os.environ[FORK_SERVER_PARENT] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        if armed:
            os.environ.pop(FORK_SERVER_PARENT, None)


def warm_up(executor: str, jobs: int) -> None:
    """Start the pool's fork server now, so its imports overlap what the caller does before
    `run_cells` (grid validation, store set-up) instead of delaying the first cell."""
    if executor == "pool" and jobs > 1 and "forkserver" in get_all_start_methods():
        _pool_context()
        _start_fork_server()


def _pool(cells, uri, jobs, data_root, done):
    single = [c for c in cells if workers_needed(c) == 1]
    multi = [c for c in cells if workers_needed(c) > 1]
    results = []
    # one cell per worker process: a worker forked fresh from the preloaded fork server returns its
    # memory when the cell ends (allocator caches of a large cell, e.g. the auxiliary-variable
    # initialisation of penalty/AL, would otherwise stay with the worker for the rest of the grid;
    # two workers reached 12 GB each on the quick profile)
    ctx = _pool_context()
    if ctx.get_start_method() == "forkserver":
        _start_fork_server()  # here, not on demand from the executor's manager thread: see there
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_pool_worker_init,
                               initargs=(os.getpid(),), max_tasks_per_child=1)
    try:
        futures = [pool.submit(_run_one, c, uri, data_root) for c in single]
        for fut in as_completed(futures):
            results.append(fut.result())
            done(results[-1])
        for cell in multi:  # they start their own worker processes: one at a time, all cores, while
            results.append(_run_one(cell, uri, data_root))  # the idle pool workers wind down
            done(results[-1])
    except BaseException:
        # interrupted, terminated or failed: the workers must not outlive the command
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def _submitit(cells, uri, data_root, opts: SlurmOptions, local: bool, done):
    import submitit

    results = []
    by_workers: dict[int, list[Cell]] = {}
    for cell in cells:
        by_workers.setdefault(workers_needed(cell), []).append(cell)
    for workers, group in sorted(by_workers.items()):
        ex = submitit.AutoExecutor(folder=str(Path(opts.folder)), cluster="local" if local else "slurm")
        params = {"timeout_min": opts.time_min, "cpus_per_task": workers}
        if not local:
            params |= {"slurm_partition": opts.partition, "slurm_array_parallelism": opts.array_parallelism,
                       "gpus_per_node": opts.gpus_per_job * workers if opts.gpus_per_job else 0}
            params = {k: v for k, v in params.items() if v is not None}
        ex.update_parameters(**params)
        jobs = ex.map_array(_run_one, group, [uri] * len(group), [data_root] * len(group))
        for job in jobs:
            results.append(job.result())
            done(results[-1])
    return results
