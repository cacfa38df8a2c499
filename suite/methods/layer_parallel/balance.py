"""Where to cut the model so that the slowest stage is fastest on this machine (`balance=time`).

Two measurements, cheap first:

1. `measure_costs` times one forward+backward of the stem, each block and the head in isolation;
   the min-max cut of those costs (`stage_bounds`) is the starting point.
2. `refine_bounds` then times what the stages really do — a training step of each stage of a
   copy of the model (`StageStepTimer`: the penalty or task loss, the input gradient, the
   optimiser step), at the run's batch — for the starting cut and every cut one block away, and
   moves to the best until no neighbour is faster.

Why both: the isolated-part probe mispredicts the stages' shares. On ResNet-20 (batch 128, one
thread, AMD EPYC, AVX2) it put the 4|7-part cut at 0.45–0.50 of the work in stage 1, where a
training step of each stage measured 0.43 / 0.57, and the 5|6 cut at 0.58–0.61 (measured
0.54 / 0.46); the probe chose 4|7, the slower cut, in most set-ups and 5|6 in others. Step timings
are noisy too, so the candidates are timed interleaved (machine drift hits all alike) and each
stage's time is a median over rounds.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch

from suite.methods.layer_parallel.stage_solver import (
    STAT_SECONDS,
    StageSolver,
    StageTask,
    solver_args,
)
from suite.methods.layer_parallel.stages import (
    BoundaryFilter,
    boundary_shapes,
    split_stages,
    stage_bounds,
)
from suite.models import StagedModel

Bounds = tuple[tuple[int, int], ...]


def measure_costs(model: StagedModel, in_shape: tuple[int, ...], batch: int, repeats: int = 5) -> list[float]:
    """Seconds of one forward+backward of the stem, each block and the head, on a random probe batch
    of `batch` samples, the run's batch size (after one warm-up pass, the median of `repeats`). Parameters receive
    gradients and are cleared afterwards; BatchNorm running statistics are restored.

    Measured at the run's batch because the parts' shares change with the batch; the warm-up keeps
    one-time kernel set-up out, and the median keeps a scheduling hiccup from moving the cut."""
    parts = [model.stem, *model.blocks, model.head]
    saved = {k: b.clone() for k, b in model.named_buffers()}
    device = next(model.parameters()).device
    x, costs = torch.randn(batch, *in_shape, device=device), []
    for k, part in enumerate(parts):
        inp = x.detach().requires_grad_(k > 0)
        seconds = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            out = part(inp)
            out.float().square().mean().backward()
            seconds.append(time.perf_counter() - t0)
        costs.append(statistics.median(seconds[1:]))
        x = out.detach()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(saved[k])
    return costs


def neighbours(bounds: Bounds) -> list[Bounds]:
    """Every cut that moves one stage boundary by one block, each stage keeping at least one."""
    out = []
    for i in range(len(bounds) - 1):
        for shift in (-1, 1):
            cut = bounds[i][1] + shift
            if bounds[i][0] < cut < bounds[i + 1][1]:
                moved = list(bounds)
                moved[i], moved[i + 1] = (bounds[i][0], cut), (cut, bounds[i + 1][1])
                out.append(tuple(moved))
    return out


def refine_bounds(start: Bounds, time_stages: Callable[[Bounds], list[float]], rounds: int = 3,
                  max_moves: int = 4) -> tuple[Bounds, list[float]]:
    """Local search over cuts: time `start` and its neighbours (`time_stages(bounds)` gives one
    round's seconds per stage; one warm-up round, then the per-stage median of `rounds`, the
    candidates interleaved), move to the one whose slowest stage is fastest, repeat until the
    current cut wins or `max_moves` moves were made. Returns the cut and its median stage times."""
    current = tuple(start)
    for _ in range(max_moves + 1):
        candidates = [current, *neighbours(current)]
        samples: dict[Bounds, list[list[float]]] = {c: [] for c in candidates}
        for r in range(rounds + 1):
            for c in candidates:
                seconds = time_stages(c)
                if r:  # round 0 warms each candidate up
                    samples[c].append(seconds)
        medians = {c: [statistics.median(col) for col in zip(*rows)] for c, rows in samples.items()}
        best = min(candidates, key=lambda c: max(medians[c]))
        if best == current:
            break
        current = best
    return current, medians[current]


class StageStepTimer:
    """Seconds of one training step of each stage of a copy of `model` cut at given bounds, on
    random inputs and targets at the run's batch (the copy's parameters move; the model's do not).
    The stages for each cut are built once and kept, so repeated rounds time warm stages."""

    def __init__(self, model: StagedModel, in_shape: tuple[int, ...], batch: int, hp, multipliers: bool):
        self.model, self.in_shape, self.batch, self.hp, self.multipliers = model, tuple(in_shape), batch, hp, multipliers
        self.built: dict[Bounds, tuple[list[StageSolver], list[StageTask]]] = {}

    def _build(self, bounds: Bounds):
        device = next(self.model.parameters()).device
        stages = split_stages(copy.deepcopy(self.model), len(bounds), list(bounds))
        filters = [BoundaryFilter(self.hp.ds_stride, s) for s in boundary_shapes(stages, self.in_shape, device)]
        n = len(stages)
        # a long schedule, so the few timed steps run at the initial rate (the rate does not change the cost)
        solvers = [StageSolver(*args) for args in solver_args(stages, filters, self.hp, 1000, 100)]
        shapes = [self.in_shape] + [f.stored_shape for f in filters]

        def rand(k):
            return torch.randn(self.batch, *shapes[k], device=device)
        tasks = [StageTask(inp=rand(k), target=rand(k + 1) if k < n - 1 else None,
                           mu=torch.zeros_like(rand(k + 1)) if self.multipliers and k < n - 1 else None,
                           y=torch.zeros(self.batch, dtype=torch.long, device=device) if k == n - 1 else None,
                           beta=self.hp.beta) for k in range(n)]
        return solvers, tasks

    def __call__(self, bounds: Bounds) -> list[float]:
        if bounds not in self.built:
            self.built[bounds] = self._build(bounds)
        solvers, tasks = self.built[bounds]
        return [float(solver.step(task).stats[STAT_SECONDS]) for solver, task in zip(solvers, tasks)]


def time_balanced_bounds(model: StagedModel, n_stages: int, in_shape: tuple[int, ...], batch: int, hp,
                         multipliers: bool) -> list[tuple[int, int]]:
    """The probe's min-max cut, refined by timing the stages' training steps."""
    start = stage_bounds(len(model.blocks), n_stages, measure_costs(model, in_shape, batch))
    bounds, _ = refine_bounds(tuple(start), StageStepTimer(model, in_shape, batch, hp, multipliers))
    return list(bounds)
