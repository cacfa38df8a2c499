"""Where MGRIT's work runs: every layer evaluation on the process that owns the layer, every value
on the process that needs it next.

`MgritSolver` is written once, for any number of processes. Every process runs the same solver
code in lockstep (SPMD); a `Placement` tells it, for each step a → b of the propagator, which rank
evaluates it (`where`), and for each point p of the layer dimension, which rank holds its current
value (`home`). Values travel by point-to-point messages (`move`) when producer and consumer
differ; a rank that neither evaluates nor receives a value skips it at once, which is what lets
the ranks' F-relaxation intervals run at the same time.

Ownership [R: TorchBraid likewise gives each rank a contiguous chunk of layers]. The run's N
blocks are cut into P contiguous chunks along the level-0 coarse intervals (⌈N/c⌉ intervals of c
blocks, shared out as evenly as possible), so on the finest level an F-relaxation interval never
leaves its rank and only the residual/C-point step at a chunk boundary sends a message. Coarse
levels and the serial coarsest solve use the same owners (a coarse step from a to b runs where
block min(a, b) lives), so they hop between ranks as they must. The adjoint runs backwards in the
layer dimension: its step b → a uses block a, so its points live one block lower. When N is not a
multiple of c the adjoint's intervals straddle chunk boundaries and cost one hand-off each.

Deadlock freedom: sends are asynchronous and waited only in `flush` (end of a solve); a receive
waits only for a value whose producer reaches that operation without waiting on the receiver, as
all ranks walk the same sequence of operations.
"""

from __future__ import annotations

import torch


def chunk_owners(blocks: int, cfactor: int, ranks: int) -> list[int]:
    """Owner rank of each block: contiguous chunks of whole level-0 intervals (c blocks each)."""
    intervals = -(-blocks // cfactor)
    owner_of_interval = [r for r in range(ranks) for _ in range(r * intervals // ranks, (r + 1) * intervals // ranks)]
    return [owner_of_interval[b // cfactor] for b in range(blocks)]


def memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class LocalPlacement:
    """One process does everything (rank 0); moving a value is a no-op."""
    rank = 0

    def where(self, a: int, b: int) -> int:
        return 0

    def home(self, p: int) -> int:
        return 0

    def owns(self, block: int) -> bool:
        return True

    def owners_of(self, block: int) -> int:
        return 0

    def move(self, x, src: int, dst: int, like: torch.Tensor | None = None):
        return x

    def share(self, x, src: int, like: torch.Tensor):
        return x

    def flush(self) -> None:
        return None


class RankPlacement:
    """This process's view of a P-rank placement over a gloo process group `pg`.

    `owners[b]` is the rank of block b. `adjoint=True` places the points of the backward solve
    (point p lives with block p−1, whose transposed step leaves it)."""

    def __init__(self, pg, rank: int, owners: list[int], like: torch.Tensor, adjoint: bool = False):
        self.pg, self.rank, self.owners, self.like = pg, rank, owners, like
        self.shift = 1 if adjoint else 0
        self.pending: list[tuple] = []  # (work, tensor): a send and the tensor it must keep alive

    def where(self, a: int, b: int) -> int:
        return self.owners[min(a, b)]

    def home(self, p: int) -> int:
        return self.owners[min(max(p - self.shift, 0), len(self.owners) - 1)]

    def owns(self, block: int) -> bool:
        return self.owners[block] == self.rank

    def owners_of(self, block: int) -> int:
        return self.owners[block]

    def move(self, x, src: int, dst: int, like: torch.Tensor | None = None):
        """The value `x` of rank `src`, delivered on rank `dst` (None on ranks that are neither);
        `like` gives the received buffer's shape and dtype when it is not a state's."""
        if src == dst:
            return x
        if self.rank == src:
            self._send(x, dst)
            return x
        if self.rank == dst:
            return self._recv(src, self.like if like is None else like)
        return None

    def share(self, x, src: int, like: torch.Tensor):
        """The value `x` of rank `src`, on every rank."""
        if self.rank == src:
            for dst in range(self.pg.size()):
                if dst != src:
                    self._send(x, dst)
            return x
        return self._recv(src, like)

    def _send(self, x: torch.Tensor, dst: int) -> None:
        x = x.detach().contiguous()
        self.pending.append((self.pg.send([x], dst, 0), x))

    def _recv(self, src: int, like: torch.Tensor) -> torch.Tensor:
        """Values travel as plain contiguous buffers and arrive in `like`'s memory format (e.g.
        channels_last, so every rank runs the same kernels as one process would)."""
        buf = torch.empty_like(like, memory_format=torch.contiguous_format)
        self.pg.recv([buf], src, 0).wait()
        return buf.contiguous(memory_format=memory_format(like))

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending = []
