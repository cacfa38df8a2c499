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

from collections.abc import Callable

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
    """λ (and μ) of every training sample at every boundary, and at most one pending update.

    A step's update can be deferred (`defer`) so that the coordinator applies it while the next
    step's stages compute (`settle`), off the critical path. The values are the same as applying it
    at once: the next step reads only its own samples' rows, and `gather` settles first when they
    include a pending row (a batch that repeats samples of the one before). Reading `lam` or `mu`
    settles too, so no reader sees a stale value."""

    def __init__(self, n_samples: int, stored_shapes: list[tuple[int, ...]], multipliers: bool):
        self._lam = [torch.zeros(n_samples, *s) for s in stored_shapes]
        self._mu = [torch.zeros(n_samples, *s) for s in stored_shapes] if multipliers else None
        self._pending: tuple[torch.Tensor, Callable[[list, list | None], None]] | None = None
        self.initialised = False

    @property
    def lam(self) -> list[torch.Tensor]:
        self.settle()
        return self._lam

    @property
    def mu(self) -> list[torch.Tensor] | None:
        self.settle()
        return self._mu

    @property
    def nbytes(self) -> int:
        tensors = self._lam + (self._mu or [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def gather(self, index: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Copies of the rows `index` of every λ_k (and μ_k)."""
        if self._pending is not None and bool(torch.isin(index, self._pending[0]).any()):
            self.settle()
        lam = [lam_k[index] for lam_k in self._lam]
        return lam, None if self._mu is None else [mu_k[index] for mu_k in self._mu]

    def defer(self, index: torch.Tensor, apply: Callable[[list[torch.Tensor], list[torch.Tensor] | None], None]):
        """Hold `apply(lam, mu)`, an update of the rows `index` only, until the next `settle`."""
        self.settle()
        self._pending = (index, apply)

    def settle(self) -> None:
        if self._pending is not None:
            _, apply = self._pending
            self._pending = None
            apply(self._lam, self._mu)

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
                self._lam[k][index] = (a - (elements[k] / beta) * g).detach().float().cpu()
        with torch.no_grad():
            for s, saved in zip(stages, buffers):
                for name, b in s.named_buffers():
                    b.copy_(saved[name])
        self.initialised = True
