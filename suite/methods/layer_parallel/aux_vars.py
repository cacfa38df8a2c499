"""Auxiliary variables λ_k (and multipliers μ_k) for every training sample at every stage
boundary, indexed by the batch's sample indices.

They live in the coordinator's host memory (CPU), in the stored (reduced, when DS is on)
resolution: N_train × C × H × W × 4 bytes per boundary (METHODS-BRIEF §1's storage warning). All
λ are initialised in one forward pass of the initial network (train-mode BatchNorm, running statistics untouched) over the un-augmented training set,
inside the first training step so the cost is on the clock.
"""

from __future__ import annotations

import torch


def aux_update(lam, mu, reduced, grad_next, beta: float, elements: int, step: float):
    """One update of a boundary's auxiliary variables (and multipliers), per sample.

    λ takes a step on every term that contains it, preconditioned by the penalty's curvature
    β/d (d elements per sample, the stage objective's per-element mean) [R: the paper's λ rule NF]:
        λ ← λ + a·[ r + μ/β − (d/β)·∂J_{k+1}/∂λ ],   r = D(F_k(R(λ_{k−1}))) − λ
    and, when there are multipliers (augmented Lagrangian), μ ← μ + β·(D(F_k) − λ_new).
    With a = 1 and no downstream term λ jumps to the stage's own minimiser D(F_k) + μ/β.
    Returns (λ_new, μ_new or None)."""
    residual = reduced - lam
    direction = residual - (elements / beta) * grad_next
    if mu is not None:
        direction = direction + mu / beta
    new_lam = lam + step * direction
    new_mu = None if mu is None else mu + beta * (reduced - new_lam)
    return new_lam, new_mu


class AuxiliaryVariables:
    def __init__(self, n_samples: int, stored_shapes: list[tuple[int, ...]], multipliers: bool):
        self.lam = [torch.zeros(n_samples, *s) for s in stored_shapes]
        self.mu = [torch.zeros(n_samples, *s) for s in stored_shapes] if multipliers else None
        self.initialised = False

    @property
    def nbytes(self) -> int:
        tensors = self.lam + (self.mu or [])
        return sum(t.numel() * t.element_size() for t in tensors)

    @torch.no_grad()
    def initialise(self, stages, filters, fetch, n_samples: int, chunk: int = 512) -> None:
        """λ_k = D(F_k(R(λ_{k−1}))) with λ_0 the clean images: the serial forward, as stored."""
        # train-mode BatchNorm (batch statistics, as the stages will see) without moving the
        # running statistics: they are put back afterwards
        buffers = [{k: b.clone() for k, b in s.named_buffers()} for s in stages]
        for start in range(0, n_samples, chunk):
            index = torch.arange(start, min(start + chunk, n_samples))
            x = fetch(index)
            for k, stage in enumerate(stages[:-1]):
                x = stage(x if k == 0 else filters[k - 1].restore(x))
                x = filters[k].reduce(x)
                self.lam[k][index] = x.float().cpu()
        for s, saved in zip(stages, buffers):
            for name, b in s.named_buffers():
                b.copy_(saved[name])
        self.initialised = True
