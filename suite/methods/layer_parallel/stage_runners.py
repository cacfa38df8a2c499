"""Where the stages' sub-problems run: in this process one after another (`LocalStages`, for tests
and for machines without spare cores) or in K worker processes at the same time (`ProcessStages`,
torch.distributed point-to-point over gloo). Both call the same `StageSolver.step`, so they
compute the same mathematics; only the placement differs.

Distributed layout: this process (the coordinator, rank 0) holds the data and the auxiliary
variables; worker k (rank k+1) holds stage k's parameters and optimiser. Per outer iteration the
coordinator sends each stage its input λ_{k−1}, target λ_k (and μ_k, or the labels) and starts
them (`launch`), applies the previous iteration's λ/μ update while they compute, then waits for
each stage's reduced output and input gradient (`collect`). Parameters come back to the
coordinator only when asked (`pull`, once per epoch, for evaluation).

The batch tensors (λ's, μ's, images, gradients: 8 MB each per boundary for ResNet-20 at batch 128)
travel through shared-memory buffers allocated once per stage (`StageBuffers`); gloo carries only
the small control messages (a header to start a step, the stats that say it is done), which also
order the buffers' writes and reads. Sending the tensors themselves through gloo's TCP loopback
cost ≈ 10–15 ms of a ≈ 180 ms step on ResNet-20, on the critical path and on the same two cores
the stages compute on.
"""

from __future__ import annotations

import copy
import datetime
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from suite.methods.layer_parallel.stage_solver import N_STATS, StageResult, StageSolver, StageTask
from suite.shutdown import dying_with_this_process

STOP, STEP, STATE = 0, 1, 2
TAG_HEADER, TAG_STATS, TAG_STATE = range(3)
TIMEOUT = datetime.timedelta(seconds=600)


class LocalStages:
    def __init__(self, solvers: list[StageSolver]):
        self.solvers = solvers
        self.results: list[StageResult] = []

    def launch(self, tasks: list[StageTask]) -> None:
        """Run every stage's step now (there is nothing to overlap with in one process)."""
        self.results = [solver.step(task) for solver, task in zip(self.solvers, tasks)]

    def collect(self) -> list[StageResult]:
        return self.results

    def pull(self, modules) -> None:
        return None  # the solvers train the coordinator's own modules

    def close(self) -> None:
        return None


def _group(port: int, rank: int, world: int, store=None):
    store = store or dist.TCPStore("127.0.0.1", port, world, False, timeout=TIMEOUT)
    return dist.ProcessGroupGloo(store, rank, world, TIMEOUT)


def _flat_state(module) -> list[torch.Tensor]:
    return [t.detach().reshape(-1).contiguous() for t in module.state_dict().values()]


class StageBuffers:
    """One stage's batch tensors in shared memory, sized for the largest batch: what the
    coordinator writes (input, target, μ, labels) and what the worker writes back (reduced output,
    input gradient). A step uses the first `batch` rows of each.

    The outputs come in two slots, used by alternate steps: the coordinator applies step t's
    auxiliary-variable update from slot t mod 2 while the workers write step t+1's into the other.
    The inputs need one: they are written only while the workers are idle."""

    def __init__(self, capacity: int, in_shape: tuple, out_shape: tuple, first: bool, last: bool, has_mu: bool):
        def shared(*shape, dtype=torch.float32):
            return torch.empty(capacity, *shape, dtype=dtype).share_memory_()
        self.capacity = capacity
        self.inp = shared(*in_shape)
        self.target = None if last else shared(*out_shape)
        self.mu = shared(*out_shape) if has_mu and not last else None
        self.y = shared(dtype=torch.int64) if last else None
        self.out = None if last else [shared(*out_shape) for _ in range(2)]
        self.grad = None if first else [shared(*in_shape) for _ in range(2)]

    def task(self, batch: int, beta: float) -> StageTask:
        """The worker's view of a step's inputs."""
        def rows(t):
            return None if t is None else t[:batch]
        return StageTask(rows(self.inp), rows(self.target), rows(self.mu), rows(self.y), beta)

    def put_task(self, task: StageTask) -> None:
        """The coordinator's write of a step's inputs."""
        batch = task.inp.shape[0]
        if batch > self.capacity:
            raise ValueError(f"a batch of {batch} samples does not fit the stage buffers ({self.capacity})")
        for src, dst in ((task.inp, self.inp), (task.target, self.target), (task.mu, self.mu), (task.y, self.y)):
            if src is not None:
                dst[:batch].copy_(src.detach())

    def put_result(self, result: StageResult, slot: int) -> None:
        batch = (result.out if result.out is not None else result.grad_in).shape[0]
        if result.out is not None:
            self.out[slot][:batch].copy_(result.out)
        if result.grad_in is not None:
            self.grad[slot][:batch].copy_(result.grad_in)

    def result(self, batch: int, stats: torch.Tensor, slot: int) -> StageResult:
        """The coordinator's view of a step's outputs: valid until the step after next overwrites
        the slot."""
        return StageResult(None if self.out is None else self.out[slot][:batch],
                           None if self.grad is None else self.grad[slot][:batch], stats)


def _worker(rank, world, port, solver_args, buffers: StageBuffers, threads):
    torch.set_num_threads(threads)
    store = dist.TCPStore("127.0.0.1", port, world, False, timeout=TIMEOUT)
    store.set(f"alive{rank}", "1")  # the coordinator waits for this before it builds its group
    pg = _group(port, rank, world, store)
    solver = StageSolver(*solver_args)
    header = torch.empty(4, dtype=torch.float64)
    while True:
        pg.recv([header], 0, TAG_HEADER).wait()
        cmd, batch, beta, slot = int(header[0]), int(header[1]), float(header[2]), int(header[3])
        if cmd == STOP:
            return
        if cmd == STATE:
            for t in _flat_state(solver.module):
                pg.send([t], 0, TAG_STATE).wait()
            continue
        result = solver.step(buffers.task(batch, beta))
        buffers.put_result(result, slot)
        pg.send([result.stats], 0, TAG_STATS).wait()  # also tells the coordinator the buffers are written


def start_workers(target, worker_args: list[tuple], what: str) -> tuple:
    """Spawn one process per entry of `worker_args`, running target(rank, world, port, *args) with
    ranks 1..K (this process is rank 0), and wait until each has joined the store. A worker that
    dies while starting (its import or set-up failed) fails this at once instead of blocking in
    the group's rendezvous until the timeout. Returns (store, processes).

    Each worker gets SIGKILL when this process dies, however it dies (`dying_with_this_process`;
    daemon=True covers only a normal exit). Strictly, when the *thread* that spawned it exits
    (PR_SET_PDEATHSIG): that is the thread that runs the cell (the main thread under `bpsuite`),
    which stops the workers (`close`) before it goes on, so only an abnormal end fires it."""
    world = len(worker_args) + 1
    store = dist.TCPStore("127.0.0.1", 0, world, True, timeout=TIMEOUT, wait_for_workers=False)
    ctx = mp.get_context("spawn")
    procs = []
    for k, args in enumerate(worker_args):
        entry, entry_args = dying_with_this_process(target, (k + 1, world, store.port, *args))
        proc = ctx.Process(target=entry, args=entry_args, daemon=True)
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
    """K spawned workers, one per stage; `threads` intra-op threads each; batches of at most
    `capacity` samples."""

    def __init__(self, solver_args: list[tuple], shapes: list[tuple], has_mu: bool, threads: int,
                 capacity: int):
        n = len(solver_args)
        self.buffers = [StageBuffers(capacity, *shapes[k], first=k == 0, last=k == n - 1, has_mu=has_mu)
                        for k in range(n)]
        # each worker gets its own copy of its stage (the coordinator keeps its modules)
        worker_args = [((copy.deepcopy(args[0]),) + tuple(args[1:]), self.buffers[k], threads)
                       for k, args in enumerate(solver_args)]
        self.store, self.procs = start_workers(_worker, worker_args, "stage worker")
        self.pg = _group(self.store.port, 0, len(solver_args) + 1, self.store)
        self.n = len(solver_args)
        self.slot, self.in_flight = 1, None

    def _header(self, rank: int, cmd: int, batch: int = 0, beta: float = 0.0, slot: int = 0):
        return self.pg.send([torch.tensor([cmd, batch, beta, slot], dtype=torch.float64)], rank, TAG_HEADER)

    def launch(self, tasks: list[StageTask]) -> None:
        """Start one step of every stage and return while the workers compute."""
        self.slot = 1 - self.slot
        works, stats = [], []
        for k in range(self.n):
            self.buffers[k].put_task(tasks[k])
            works.append(self._header(k + 1, STEP, tasks[k].inp.shape[0], tasks[k].beta, self.slot))
        for k in range(self.n):
            stats.append(torch.empty(N_STATS, dtype=torch.float64))
            works.append(self.pg.recv([stats[k]], k + 1, TAG_STATS))
        self.in_flight = (works, stats, [t.inp.shape[0] for t in tasks])

    def collect(self) -> list[StageResult]:
        """Wait for the launched step; the results' tensors are views of the shared buffers, valid
        until the step after next (two slots)."""
        works, stats, batches = self.in_flight
        self.in_flight = None
        for work in works:
            work.wait()
        return [self.buffers[k].result(batches[k], stats[k], self.slot) for k in range(self.n)]

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
