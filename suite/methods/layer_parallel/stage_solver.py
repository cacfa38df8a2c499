"""One stage's sub-problem in one outer iteration — the unit of work that runs in parallel.

Stage k < K minimises, over its parameters θ_k, on the batch's samples i:

    J_k = mean_i [ β/2 · mean_j (r_ij)² + mean_j μ_ij r_ij ],   r = D(F_k(R(λ_{k−1}))) − λ_k

(D/R the boundary filter's reduce/restore; μ = 0 for the penalty method); stage K minimises the
task loss on its input R(λ_{K−1}). The per-element mean (not sum) makes β independent of the
boundary's size [R: the paper's normalisation is NF]. It is the standard sum-of-squares penalty
β_s/2·‖r‖² + ⟨μ_s, r⟩ with β_s = β/d and μ_s = μ/d (d elements per sample): the two objectives are
equal term by term, and so are the λ and μ updates, so the iterates coincide (tested). One optimiser
step per outer iteration.
The stage also returns what the auxiliary-variable update needs: its reduced output D(F_k(·))
and the per-sample gradient of its objective w.r.t. its input λ_{k−1}. The same code runs in the
harness process (single-process mode) and in a worker process (distributed mode).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from suite.methods.optim import Optimiser


@dataclass
class StageTask:
    inp: torch.Tensor  # stage 1: images; otherwise λ_{k−1} as stored (reduced when DS is on)
    target: torch.Tensor | None  # λ_k as stored (None for the last stage)
    mu: torch.Tensor | None  # multipliers μ_k (augmented Lagrangian only)
    y: torch.Tensor | None  # labels (last stage only)
    beta: float


# Positions in StageResult.stats: the objective, correct predictions (last stage), compute seconds,
# and ‖D(F_k) − λ_k‖ and ‖D(F_k)‖ (the boundary's violation, computed where both tensors are at hand;
# 0 for the last stage). The distributed runner receives exactly N_STATS numbers per stage.
STAT_OBJECTIVE, STAT_CORRECT, STAT_SECONDS, STAT_RESIDUAL_NORM, STAT_OUT_NORM = range(5)
N_STATS = 5


@dataclass
class StageResult:
    out: torch.Tensor | None  # D(F_k(input)), detached (None for the last stage)
    grad_in: torch.Tensor | None  # per-sample ∂J_k/∂λ_{k−1} (None for the first stage)
    stats: torch.Tensor  # float64, indexed by the STAT_* positions below


class StageSolver:
    def __init__(self, module: nn.Module, index: int, n_stages: int, hp, total_steps: int,
                 steps_per_epoch: int, in_filter, out_filter):
        self.module, self.index = module, index
        self.first, self.last = index == 0, index == n_stages - 1
        self.in_filter, self.out_filter = in_filter, out_filter
        self.optim = Optimiser(module.parameters(), hp, total_steps, steps_per_epoch)

    def step(self, task: StageTask) -> StageResult:
        t0 = time.perf_counter()
        self.module.train()
        inp = task.inp if self.first else task.inp.detach().requires_grad_(True)
        out = self.module(inp if self.first else self.in_filter.restore(inp))
        correct = r_norm = out_norm = 0.0
        if self.last:
            objective = F.cross_entropy(out, task.y)
            correct = float((out.detach().argmax(1) == task.y).sum())
            reduced = None
        else:
            reduced = self.out_filter.reduce(out)
            r = (reduced - task.target).flatten(1)
            squares = r.pow(2).mean(1)
            per_sample = 0.5 * task.beta * squares
            if task.mu is not None:
                per_sample = per_sample + (task.mu.flatten(1) * r).mean(1)
            objective = per_sample.mean()
            with torch.no_grad():  # ‖r‖ from the squares already summed: one pass less over r
                r_norm, out_norm = float(squares.sum().mul(r.shape[1]).sqrt()), float(reduced.norm())
        self.optim.step(objective)
        grad_in = None if self.first else inp.grad * inp.shape[0]  # mean over the batch -> per sample
        seconds = time.perf_counter() - t0
        return StageResult(None if reduced is None else reduced.detach(), grad_in,
                           torch.tensor([objective.item(), correct, seconds, r_norm, out_norm], dtype=torch.float64))


def solver_args(stages: list[nn.Module], filters: list, hp, total_steps: int, steps_per_epoch: int) -> list[tuple]:
    """`StageSolver` arguments for every stage: stage k reads through boundary k−1's filter and
    writes through boundary k's (the first stage has no input filter, the last no output one).
    Tuples, not solvers, because the distributed runner builds the solvers in its workers."""
    n = len(stages)
    return [(stage, k, n, hp, total_steps, steps_per_epoch, filters[k - 1] if k else None,
             filters[k] if k < n - 1 else None) for k, stage in enumerate(stages)]
