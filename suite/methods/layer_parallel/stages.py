"""Cutting a StagedModel into K stages, and the downsampling (DS) filter on stage boundaries.

Stage k is a contiguous run of blocks; the stem joins stage 1 and the head joins stage K
(the standard layout of auxiliary-variable methods). The paper's cut points are not available
[NF]. Rules [R]: `balance=blocks` (default, deterministic) gives every stage the same number of
blocks (the first stages take the extra ones); `balance=time` cuts where the slowest stage is
fastest on this machine, as pipeline partitioners do (balance.py measures it); `stage_blocks`
names the cut explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError
from suite.models import StagedModel


def stage_bounds(n_blocks: int, n_stages: int, costs: list[float] | None = None) -> list[tuple[int, int]]:
    """[(start, stop)) block ranges of each stage: equal block counts, or, given `costs` (stem,
    blocks..., head), the contiguous cut that minimises the most expensive stage."""
    if not 2 <= n_stages <= n_blocks:
        raise UsageError(f"stages={n_stages} is invalid for a model with {n_blocks} blocks: "
                         f"choose 2 ≤ stages ≤ {n_blocks}")
    if costs is not None:
        return _min_max_cut(costs, n_stages)
    base, extra = divmod(n_blocks, n_stages)
    bounds, start = [], 0
    for k in range(n_stages):
        stop = start + base + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def bounds_from_blocks(blocks_per_stage: tuple[int, ...], n_blocks: int) -> list[tuple[int, int]]:
    """The cut that gives stage k `blocks_per_stage[k]` blocks, in order."""
    if len(blocks_per_stage) < 2 or min(blocks_per_stage) < 1 or sum(blocks_per_stage) != n_blocks:
        raise UsageError(f"stage_blocks={','.join(map(str, blocks_per_stage))} is not a cut of this model: "
                         f"give at least 2 stages of at least 1 block each, summing to its {n_blocks} blocks")
    bounds, start = [], 0
    for count in blocks_per_stage:
        bounds.append((start, start + count))
        start += count
    return bounds


def _min_max_cut(costs: list[float], n_stages: int) -> list[tuple[int, int]]:
    """Dynamic programme over cut points; stem cost goes to stage 1, head cost to stage K."""
    stem, blocks, head = costs[0], costs[1:-1], costs[-1]
    n = len(blocks)
    prefix = [0.0]
    for c in blocks:
        prefix.append(prefix[-1] + c)

    def cost(k: int, start: int, stop: int) -> float:
        return prefix[stop] - prefix[start] + (stem if k == 0 else 0) + (head if k == n_stages - 1 else 0)

    # best[k][j]: the smallest possible max stage cost when stages 0..k cover blocks [0, j)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(n_stages)]
    cut = [[0] * (n + 1) for _ in range(n_stages)]
    for j in range(1, n + 1):
        best[0][j] = cost(0, 0, j)
    for k in range(1, n_stages):
        for j in range(k + 1, n + 1):
            for i in range(k, j):
                value = max(best[k - 1][i], cost(k, i, j))
                if value < best[k][j]:
                    best[k][j], cut[k][j] = value, i
    bounds, stop = [], n
    for k in range(n_stages - 1, 0, -1):
        start = cut[k][stop]
        bounds.append((start, stop))
        stop = start
    return [(0, stop)] + bounds[::-1]


def split_stages(model: StagedModel, n_stages: int, bounds: list[tuple[int, int]] | None = None) -> list[nn.Sequential]:
    """Stage modules that share their parameters with `model` (no copies), cut at `bounds` (block
    ranges, as `stage_bounds` returns them) or, without, into equal block counts."""
    bounds = bounds or stage_bounds(len(model.blocks), n_stages)
    stages = []
    for k, (start, stop) in enumerate(bounds):
        parts = ([model.stem] if k == 0 else []) + list(model.blocks[start:stop])
        parts += [model.head] if k == n_stages - 1 else []
        stages.append(nn.Sequential(*parts))
    return stages


class BoundaryFilter:
    """The DS filter: an auxiliary variable is stored and sent as `reduce(a)` (average pooling
    with stride s, ceil mode so no pixel is dropped) and the receiving stage uses `restore(λ)`
    (nearest-neighbour upsampling back to the full size). The paper's exact filter is [NF]; this
    pair is our reconstruction. Stride 1, or a boundary that is not a feature map, is the identity."""

    def __init__(self, stride: int, full_shape: tuple[int, ...]):
        self.full_shape = tuple(full_shape)
        self.stride = stride if len(full_shape) == 3 else 1

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if self.stride == 1:
            return self.full_shape
        c, h, w = self.full_shape
        return (c, -(-h // self.stride), -(-w // self.stride))

    def reduce(self, a: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return a
        return F.avg_pool2d(a, self.stride, self.stride, ceil_mode=True)

    def restore(self, lam: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return lam
        return F.interpolate(lam, size=self.full_shape[1:], mode="nearest")


@torch.no_grad()
def boundary_shapes(stages: list[nn.Module], in_shape: tuple[int, ...], device) -> list[tuple[int, ...]]:
    """Per-sample output shape of every stage but the last (the auxiliary variables' shapes)."""
    shapes, x = [], torch.zeros(2, *in_shape, device=device)
    training = [s.training for s in stages]
    for s in stages:
        s.eval()  # a probe must not move BatchNorm running statistics
    for stage in stages[:-1]:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    for s, t in zip(stages, training):
        s.train(t)
    return shapes
