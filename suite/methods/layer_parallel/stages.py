"""Cutting a StagedModel into K stages, and the downsampling (DS) filter on stage boundaries.

Stage k is a contiguous run of blocks; the stem joins stage 1 and the head joins stage K
(METHODS-BRIEF §1). The paper's cut points are not available [NF]: we balance the number of
blocks per stage (the first stages take the extra blocks), which balances compute for runs of
equal blocks, and say so in the docs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError
from suite.models import StagedModel


def stage_bounds(n_blocks: int, n_stages: int) -> list[tuple[int, int]]:
    """[(start, stop)) block ranges of each stage, as equal as possible."""
    if not 2 <= n_stages <= n_blocks:
        raise UsageError(f"stages={n_stages} is invalid for a model with {n_blocks} blocks: "
                         f"choose 2 ≤ stages ≤ {n_blocks}")
    base, extra = divmod(n_blocks, n_stages)
    bounds, start = [], 0
    for k in range(n_stages):
        stop = start + base + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def split_stages(model: StagedModel, n_stages: int) -> list[nn.Sequential]:
    """Stage modules that share their parameters with `model` (no copies)."""
    bounds = stage_bounds(len(model.blocks), n_stages)
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
