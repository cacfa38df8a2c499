"""MGRIT's layer chunks in P processes: this process (the coordinator, rank 0, which also runs
the stem, the head and the optimiser) and P−1 spawned workers, torch.distributed point-to-point
over gloo, the same start-up and group set-up as the penalty method's stage workers.

Every rank holds a copy of each ODE run's blocks and owns a contiguous chunk of them
(`chunk_owners`); all ranks run the same solver code (`run_forward`, `run_adjoint`) over a
`RankPlacement`, so the mathematics is the single-process one and only the placement differs.
Per training step and run:

* forward: the coordinator sends a header (run, iteration rule, state shape), each worker the
  current parameters of the blocks it owns (the optimiser lives on rank 0), and every rank the
  run's input u_0; the ranks solve; u_N comes back to rank 0. Each rank keeps its own states.
* adjoint: a header and dL/du_N to every rank; the ranks solve the adjoint at their states; each
  owner sends its blocks' parameter gradients, and rank 0 gets dL/du_0.

Threads: each process runs ⌊cores/P⌋ intra-op threads (at least 1); the coordinator lends its
others away only while a solve runs, so the stem, head and evaluation keep every core.
"""

from __future__ import annotations

import copy
import os

import torch

from suite.methods.layer_parallel.mgrit import (
    Iterations,
    MgritConfig,
    WarmStart,
    run_adjoint,
    run_forward,
)
from suite.methods.layer_parallel.mgrit_placement import RankPlacement, chunk_owners, memory_format
from suite.methods.layer_parallel.stage_runners import TIMEOUT, _group, start_workers, stop_workers

STOP, FORWARD, ADJOINT = 0, 1, 2
TAG_HEADER, TAG_PARAMS = 1, 2  # tag 0 carries the solver's own messages
HEADER = 14  # cmd, run, iters, tol, max_iters, warm, channels_last, ndim, up to 6 dimensions


def _header(cmd: int, run: int = 0, until: Iterations | None = None, like: torch.Tensor | None = None,
            warm: bool = False) -> torch.Tensor:
    until = until or Iterations()
    shape = tuple(like.shape) if like is not None else ()
    channels_last = like is not None and memory_format(like) == torch.channels_last
    values = [cmd, run, until.iters, until.tol, until.max_iters, warm, channels_last, len(shape), *shape]
    return torch.tensor(values + [0] * (HEADER - len(values)), dtype=torch.float64)


def _parse(header: torch.Tensor) -> tuple[int, int, Iterations, bool, torch.Tensor]:
    """(cmd, run, iteration rule, warm start, an empty tensor shaped and laid out like the run's states)"""
    h = header.tolist()
    ndim = int(h[7])
    like = torch.empty(tuple(int(d) for d in h[8:8 + ndim]))
    if h[6]:
        like = like.contiguous(memory_format=torch.channels_last)
    return int(h[0]), int(h[1]), Iterations(int(h[2]), h[3], int(h[4])), bool(h[5]), like


def _flat_params(blocks, owners: list[int], rank: int) -> torch.Tensor:
    """The parameters of the blocks `rank` owns, in one flat tensor."""
    tensors = [p.detach().reshape(-1) for block, owner in zip(blocks, owners) if owner == rank
               for p in block.parameters()]
    return torch.cat(tensors) if tensors else torch.zeros(0)


def _load_params(blocks, owners: list[int], rank: int, flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for block, owner in zip(blocks, owners):
            if owner == rank:
                for p in block.parameters():
                    p.copy_(flat[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()


def _worker(rank, world, port, runs, owners, config, threads):
    torch.set_num_threads(threads)
    store = torch.distributed.TCPStore("127.0.0.1", port, world, False, timeout=TIMEOUT)
    store.set(f"alive{rank}", "1")
    pg = _group(port, rank, world, store)
    states = {}  # run -> this rank's forward states, kept for the adjoint
    warm_starts = {}  # run -> this rank's last solves, for warm starts
    header = torch.empty(HEADER, dtype=torch.float64)
    while True:
        pg.recv([header], 0, TAG_HEADER).wait()
        cmd, run, until, warm, like = _parse(header)
        if cmd == STOP:
            return
        blocks = runs[run]
        keep = warm_starts.setdefault(run, WarmStart()) if warm else None
        place = RankPlacement(pg, rank, owners[run], like, adjoint=cmd == ADJOINT)
        if cmd == FORWARD:
            flat = _flat_params(blocks, owners[run], rank)
            pg.recv([flat], 0, TAG_PARAMS).wait()
            _load_params(blocks, owners[run], rank, flat)
            u0 = place.share(None, 0, like)
            _, states[run], _ = run_forward(blocks, u0, config, until, place, keep)
        else:
            grad_out = place.share(None, 0, like)
            run_adjoint(blocks, states.pop(run), grad_out, config, until, place, keep)


class ProcessTeam:
    """Rank 0 of a P-process MGRIT team over the model's ODE runs (lists of blocks)."""

    def __init__(self, runs: list[list[torch.nn.Module]], config: MgritConfig, processes: int):
        self.config, self.world = config, processes
        self.owners = [chunk_owners(len(run), config.cfactor, processes) for run in runs]
        self.threads = max(1, (os.cpu_count() or 1) // processes)
        copies = [[copy.deepcopy(block) for block in run] for run in runs]
        args = [(copies, self.owners, config, self.threads)] * (processes - 1)
        self.store, self.procs = start_workers(_worker, args, "mgrit worker")
        self.pg = _group(self.store.port, 0, processes, self.store)
        self.warm: dict[int, WarmStart] = {}  # rank 0's last solves per run, for warm starts

    def _solve(self, fn, *args):
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(before)

    def forward(self, run: int, blocks, u0: torch.Tensor, until: Iterations, warm: bool = False):
        u0 = u0.detach()
        keep = self.warm.setdefault(run, WarmStart()) if warm else None
        sends = []  # (work, tensor): each tensor alive until its send completes
        for rank in range(1, self.world):
            for t, tag in ((_header(FORWARD, run, until, u0, warm), TAG_HEADER),
                           (_flat_params(blocks, self.owners[run], rank).contiguous(), TAG_PARAMS)):
                sends.append((self.pg.send([t], rank, tag), t))
        place = RankPlacement(self.pg, 0, self.owners[run], u0)
        place.share(u0, 0, u0)
        out, states, trace = self._solve(run_forward, blocks, u0, self.config, until, place, keep)
        for work, _ in sends:
            work.wait()
        return out, states, trace

    def adjoint(self, run: int, blocks, states, grad_out: torch.Tensor, until: Iterations, warm: bool = False):
        keep = self.warm.setdefault(run, WarmStart()) if warm else None
        header = _header(ADJOINT, run, until, grad_out, warm)
        sends = [self.pg.send([header], rank, TAG_HEADER) for rank in range(1, self.world)]
        place = RankPlacement(self.pg, 0, self.owners[run], grad_out, adjoint=True)
        place.share(grad_out, 0, grad_out)
        result = self._solve(run_adjoint, blocks, states, grad_out, self.config, until, place, keep)
        for work in sends:
            work.wait()
        return result

    def close(self) -> None:
        if self.procs:
            stop = _header(STOP)
            stop_workers(self.procs, lambda rank: self.pg.send([stop], rank, TAG_HEADER))
        self.procs = []

    def __deepcopy__(self, memo):
        raise TypeError("worker processes cannot be copied")
