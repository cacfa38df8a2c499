"""Optimiser and learning-rate schedule shared by every method that takes SGD/Adam steps.

Defaults are the standard CIFAR ResNet recipe of He et al. 2016: SGD, lr 0.1, momentum 0.9,
weight decay 1e-4, batch 128, lr divided by 10 at 50% and 75% of training (their 32k/48k of 64k
iterations). The schedule is applied per step, so it is exact for any epoch count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from suite.params import LogUniform, param


@dataclass(frozen=True)
class OptimHParams:
    optimizer: str = param("sgd", "sgd (with momentum) or adam", choices=("sgd", "adam"))
    lr: float = param(0.1, "learning rate", low=0.0, low_open=True, tune=LogUniform(1e-4, 1.0))
    momentum: float = param(0.9, "SGD momentum (adam: beta1)", low=0.0, high=1.0)
    weight_decay: float = param(1e-4, "L2 weight decay", low=0.0)
    nesterov: bool = param(False, "Nesterov momentum (SGD)")
    schedule: str = param("step", "lr schedule", choices=("step", "cosine", "constant"))
    milestones: tuple[float, ...] = param((0.5, 0.75), "step schedule: fractions of training at which lr *= gamma")
    gamma: float = param(0.1, "step schedule factor", low=0.0, low_open=True, high=1.0)
    warmup_epochs: float = param(0.0, "linear warm-up length in epochs", low=0.0)


def make_optimizer(params, hp: OptimHParams) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, betas=(hp.momentum, 0.999), weight_decay=hp.weight_decay)
    return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay,
                           nesterov=hp.nesterov and hp.momentum > 0)


def lr_factor(hp: OptimHParams, step: int, total_steps: int, steps_per_epoch: int) -> float:
    warmup = hp.warmup_epochs * steps_per_epoch
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = step / max(1, total_steps)
    if hp.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if hp.schedule == "step":
        return hp.gamma ** sum(progress >= m for m in hp.milestones)
    return 1.0


def make_scheduler(opt, hp: OptimHParams, total_steps: int, steps_per_epoch: int, start_step: int = 0):
    """A per-step LambdaLR; call `.step()` after every optimiser step. `start_step`: the run's step
    at which this optimiser starts (its schedule continues from there)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(hp, start_step + step, total_steps, steps_per_epoch))


class Optimiser:
    """An optimiser with its per-step schedule: the update that every gradient-based method takes
    (bp, fa, dfa, local, mgrit, each penalty stage). What differs between methods is only how the
    objective's backward pass routes the error (hooks, feedback nodes, detached boundaries)."""

    def __init__(self, params, hp: OptimHParams, total_steps: int, steps_per_epoch: int,
                 before_step: Callable[[], None] | None = None, start_step: int = 0):
        """`before_step`: called between the backward pass and the optimiser step, where a method
        changes gradients (clip, sign, mask). `start_step`: the schedule starts at this step of the
        run (an optimiser made mid-run continues the run's schedule)."""
        self.opt = make_optimizer(params, hp)
        self.sched = make_scheduler(self.opt, hp, total_steps, steps_per_epoch, start_step)
        self.before_step = before_step

    def step(self, objective: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        objective.backward()
        if self.before_step is not None:
            self.before_step()
        self.opt.step()
        self.sched.step()

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]
