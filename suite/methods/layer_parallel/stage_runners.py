"""Where the stages' sub-problems run: in this process one after another (`LocalStages`, for tests
and for machines without spare cores) or in K worker processes at the same time (`ProcessStages`,
torch.distributed point-to-point over gloo). Both call the same `StageSolver.step`, so they
compute the same mathematics; only the placement differs.

Distributed layout: this process (the coordinator, rank 0) holds the data and the auxiliary
variables; worker k (rank k+1) holds stage k's parameters and optimiser. Per outer iteration the
coordinator sends each stage its input λ_{k−1}, target λ_k (and μ_k, or the labels), the stages
step concurrently, and each sends back its reduced output and its input gradient. Parameters come
back to the coordinator only when asked (`pull`, once per epoch, for evaluation).
"""

from __future__ import annotations

import copy
import datetime
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from suite.methods.layer_parallel.stage_solver import StageResult, StageSolver, StageTask

STOP, STEP, STATE = 0, 1, 2
TAG_HEADER, TAG_IN, TAG_TARGET, TAG_MU, TAG_Y, TAG_OUT, TAG_GRAD, TAG_STATS, TAG_STATE = range(9)
TIMEOUT = datetime.timedelta(seconds=600)


class LocalStages:
    def __init__(self, solvers: list[StageSolver]):
        self.solvers = solvers

    def run(self, tasks: list[StageTask]) -> list[StageResult]:
        return [solver.step(task) for solver, task in zip(self.solvers, tasks)]

    def pull(self, modules) -> None:
        return None  # the solvers train the coordinator's own modules

    def close(self) -> None:
        return None


def _group(port: int, rank: int, world: int, store=None):
    store = store or dist.TCPStore("127.0.0.1", port, world, False, timeout=TIMEOUT)
    return dist.ProcessGroupGloo(store, rank, world, TIMEOUT)


def _flat_state(module) -> list[torch.Tensor]:
    return [t.detach().reshape(-1).contiguous() for t in module.state_dict().values()]


def _worker(rank, world, port, solver_args, shapes, has_mu, threads):
    torch.set_num_threads(threads)
    store = dist.TCPStore("127.0.0.1", port, world, False, timeout=TIMEOUT)
    store.set(f"alive{rank}", "1")  # the coordinator waits for this before it builds its group
    pg = _group(port, rank, world, store)
    solver = StageSolver(*solver_args)
    in_shape, out_shape = shapes
    header = torch.empty(3, dtype=torch.float64)
    while True:
        pg.recv([header], 0, TAG_HEADER).wait()
        cmd, batch, beta = int(header[0]), int(header[1]), float(header[2])
        if cmd == STOP:
            return
        if cmd == STATE:
            for t in _flat_state(solver.module):
                pg.send([t], 0, TAG_STATE).wait()
            continue
        inp = _recv(pg, (batch, *in_shape), torch.float32, TAG_IN)
        target = mu = y = None
        if not solver.last:
            target = _recv(pg, (batch, *out_shape), torch.float32, TAG_TARGET)
            mu = _recv(pg, (batch, *out_shape), torch.float32, TAG_MU) if has_mu else None
        else:
            y = _recv(pg, (batch,), torch.int64, TAG_Y)
        result = solver.step(StageTask(inp, target, mu, y, beta))
        sends = [(result.out, TAG_OUT), (result.grad_in, TAG_GRAD), (result.stats, TAG_STATS)]
        for work in [pg.send([t.contiguous()], 0, tag) for t, tag in sends if t is not None]:
            work.wait()


def _recv(pg, shape, dtype, tag) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype)
    pg.recv([t], 0, tag).wait()
    return t


def start_workers(target, worker_args: list[tuple], what: str) -> tuple:
    """Spawn one process per entry of `worker_args`, running target(rank, world, port, *args) with
    ranks 1..K (this process is rank 0), and wait until each has joined the store. A worker that
    dies while starting (its import or set-up failed) fails this at once instead of blocking in
    the group's rendezvous until the timeout. Returns (store, processes)."""
    world = len(worker_args) + 1
    store = dist.TCPStore("127.0.0.1", 0, world, True, timeout=TIMEOUT, wait_for_workers=False)
    ctx = mp.get_context("spawn")
    procs = []
    for k, args in enumerate(worker_args):
        proc = ctx.Process(target=target, args=(k + 1, world, store.port, *args), daemon=True)
        proc.start()
        procs.append(proc)
    keys = [f"alive{k + 1}" for k in range(len(procs))]
    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while not store.check(keys):
        dead = [(k, p) for k, p in enumerate(procs) if not p.is_alive()]
        if dead or time.monotonic() > deadline:
            for proc in procs:
                proc.terminate()
            if not dead:
                raise RuntimeError(f"{what}s did not start in time")
            k, proc = dead[0]
            raise RuntimeError(f"{what} {k + 1} exited with code {proc.exitcode} while starting "
                               f"(a spawned worker re-imports the __main__ script: guard it with "
                               f"`if __name__ == '__main__':`)")
        time.sleep(0.05)
    return store, procs


def stop_workers(procs, send_stop) -> None:
    """Ask ranks 1..K to stop (send_stop(rank) returns the send's Work), then join them; a worker
    already gone is skipped, one that does not exit in 30 s is terminated."""
    for rank in range(1, len(procs) + 1):
        try:
            send_stop(rank).wait()
        except RuntimeError:
            pass  # the worker is already gone
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


class ProcessStages:
    """K spawned workers, one per stage; `threads` intra-op threads each."""

    def __init__(self, solver_args: list[tuple], shapes: list[tuple], has_mu: bool, threads: int = 1):
        # each worker gets its own copy of its stage (the coordinator keeps its modules)
        worker_args = [((copy.deepcopy(args[0]),) + tuple(args[1:]), shapes[k], has_mu, threads)
                       for k, args in enumerate(solver_args)]
        self.store, self.procs = start_workers(_worker, worker_args, "stage worker")
        self.pg = _group(self.store.port, 0, len(solver_args) + 1, self.store)
        self.n = len(solver_args)

    def _header(self, rank: int, cmd: int, batch: int = 0, beta: float = 0.0):
        return self.pg.send([torch.tensor([cmd, batch, beta], dtype=torch.float64)], rank, TAG_HEADER)

    def run(self, tasks: list[StageTask]) -> list[StageResult]:
        works, keep = [], []
        for k, task in enumerate(tasks):
            rank = k + 1
            works.append(self._header(rank, STEP, task.inp.shape[0], task.beta))
            for t, tag in ((task.inp, TAG_IN), (task.target, TAG_TARGET), (task.mu, TAG_MU), (task.y, TAG_Y)):
                if t is not None:
                    t = t.detach().contiguous().cpu()
                    keep.append(t)  # alive until the send completes
                    works.append(self.pg.send([t], rank, tag))
        results = []
        for k, task in enumerate(tasks):
            rank, last, first = k + 1, k == self.n - 1, k == 0
            out = None if last else torch.empty_like(task.target, device="cpu")
            grad = None if first else torch.empty_like(task.inp, device="cpu")
            stats = torch.empty(3, dtype=torch.float64)
            for t, tag in ((out, TAG_OUT), (grad, TAG_GRAD), (stats, TAG_STATS)):
                if t is not None:
                    works.append(self.pg.recv([t], rank, tag))
            results.append(StageResult(out, grad, stats))
        for work in works:
            work.wait()
        return results

    def pull(self, modules) -> None:
        """Copy every worker's parameters and buffers into the coordinator's stage modules."""
        for k, module in enumerate(modules):
            self._header(k + 1, STATE).wait()
            with torch.no_grad():
                for t in module.state_dict().values():
                    buf = torch.empty(t.numel(), dtype=t.dtype)
                    self.pg.recv([buf], k + 1, TAG_STATE).wait()
                    t.copy_(buf.view_as(t))

    def close(self) -> None:
        if self.procs:
            stop_workers(self.procs, lambda rank: self._header(rank, STOP))
        self.procs = []

    def __deepcopy__(self, memo):
        raise TypeError("worker processes cannot be copied")
