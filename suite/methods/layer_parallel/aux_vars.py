"""Auxiliary variables λ_k (and multipliers μ_k) for every training sample at every stage
boundary, indexed by the batch's sample indices.

They live in the coordinator's host memory (CPU), in the stored (reduced, when DS is on)
resolution: N_train × C × H × W × 4 bytes per boundary — 64 KB per sample after the first stage of
a CIFAR ResNet, ≈ 3.3 GB for 50k samples, which is why the DS filter matters.

Initialisation [R]. λ_k starts at the first-order solution of its own sub-problem for the
initial weights: the serial activation a_k = D(F_k(R(λ_{k−1}))) moved against the task loss,

    λ_k = a_k − (d_k/β_0)·∂ℓ/∂a_k      (per sample; ∂ℓ/∂a_k through the serial network)

which minimises ℓ + β_0/2·mean_j (a_k − λ_k)² to first order in 1/β_0. Starting at λ_k = a_k
instead makes every residual exactly zero when a sample is first visited, so stage 1 gets no
gradient in the whole first epoch; from this start its first target gives it BP's per-sample
gradient (β/d·r = ∂ℓ/∂a_k). Cost: one forward and backward pass of the initial network over the
un-augmented training set (train-mode BatchNorm, running statistics put back, no parameter
gradient), inside the first training step, so on the clock.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def aux_update(lam, mu, reduced, grad_next, beta: float, elements: int, step: float):
    """One update of a boundary's auxiliary variables (and multipliers), per sample.

    λ takes a step on every term that contains it, preconditioned by the penalty's curvature
    β/d (d elements per sample, the stage objective's per-element mean) [R: the paper's λ rule NF]:
        λ ← λ + a·[ r + μ/β − (d/β)·∂J_{k+1}/∂λ ],   r = D(F_k(R(λ_{k−1}))) − λ
    and, when there are multipliers (augmented Lagrangian), μ ← μ + β·(D(F_k) − λ_new).
    With a = 1 and no downstream term λ jumps to the stage's own minimiser D(F_k) + μ/β.
    Returns (λ_new, μ_new or None)."""
    # in place on one fresh tensor: each 8 MB temporary of the plain expression cost a page-faulting
    # allocation on the coordinator's critical path (3.7 ms → 1.1 ms per boundary, ResNet-20, batch 128)
    direction = torch.sub(reduced, lam)
    direction.add_(grad_next, alpha=-(elements / beta))
    if mu is not None:
        direction.add_(mu, alpha=1.0 / beta)
    new_lam = direction.mul_(step).add_(lam)
    new_mu = None if mu is None else torch.sub(reduced, new_lam).mul_(beta).add_(mu)
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

    def initialise(self, stages, filters, fetch, labels, beta: float, elements: list[int],
                   chunk: int = 512) -> None:
        """λ_k = a_k − (d_k/β)·∂ℓ/∂a_k at the initial weights, a_k the serial forward as stored."""
        # train-mode BatchNorm (batch statistics, as the stages will see) without moving the
        # running statistics: they are put back afterwards
        buffers = [{k: b.clone() for k, b in s.named_buffers()} for s in stages]
        n_samples = len(labels)
        for start in range(0, n_samples, chunk):
            index = torch.arange(start, min(start + chunk, n_samples))
            x, stored = fetch(index), []
            for k, stage in enumerate(stages[:-1]):
                x = filters[k].reduce(stage(x if k == 0 else filters[k - 1].restore(x)))
                stored.append(x)
            logits = stages[-1](filters[-1].restore(x))
            loss = F.cross_entropy(logits, labels[index.to(labels.device)], reduction="sum")  # per-sample gradients
            grads = torch.autograd.grad(loss, stored)  # no parameter's .grad is touched
            for k, (a, g) in enumerate(zip(stored, grads)):
                self.lam[k][index] = (a - (elements[k] / beta) * g).detach().float().cpu()
        with torch.no_grad():
            for s, saved in zip(stages, buffers):
                for name, b in s.named_buffers():
                    b.copy_(saved[name])
        self.initialised = True
