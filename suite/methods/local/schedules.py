"""Learning-mode selection: where the Localized→SGD transition layer sits at each epoch.

Everything here counts *layers* (entries of `StagedModel.layers()`); `boundary.py` maps a layer
count onto a block boundary of the model.

Static schedules (RECONSTRUCTION). The paper (Krithivasan et al. 2022, §2.2) gives linear,
quadratic and exponential functions N(E) of the epoch E with hyper-parameters c1 ("controls the
maximum number of layers that are updated locally") and c2 ("controls the epoch at which localized
updates begin") and E_max (the number of training epochs), but the formulas themselves are not in
the available text. This suite uses

    N_max = floor(c1 · L)                       c1 ∈ [0, 1], L = number of layers
    E0    = floor(c2 · E_max)                   c2 ∈ [0, 1): fraction of training before any local layer
    p(E)  = clamp((E − E0 + 1) / (E_max − E0), 0, 1)     0 before E0, 1 at the last epoch
    linear:       N(E) = floor(N_max · p)
    quadratic:    N(E) = floor(N_max · p²)
    exponential:  N(E) = floor(N_max · (e^{k·p} − 1) / (e^k − 1)),  k = `exp_rate` (default 3)

so all three are monotone, 0 before E0, reach N_max at the last epoch and differ only in the area
under the curve (linear > quadratic > exponential). Making c2 a fraction (not an epoch index) keeps
one setting meaningful for a 6-epoch quick run and a 200-epoch paper run.

Dynamic schedule (the paper's Algorithm 1, RECONSTRUCTED details): after every epoch, the L2 norm
a_E of the SGD update of the transition layer over that epoch (‖W_end − W_start‖, one difference
per epoch) is compared with W_avg, an exponential running average of the same layer's norms of the
*previous* epochs (decay γ = `ema_decay`); if a_E < α · W_avg the boundary moves L_shift layers
deeper (at least to the next block boundary), otherwise it stays. Then W_avg ← γ·W_avg + (1−γ)·a_E.
The running average is kept for every SGD layer, so a new transition layer compares against its
own history. The paper's text does not say whether the average includes the current epoch, its
decay, or per-step vs per-epoch norms; these are this suite's choices. c1 caps the dynamic boundary
too (it is the same "maximum fraction localized").
"""

from __future__ import annotations

import math

STATIC = ("linear", "quadratic", "exponential")
SCHEDULES = ("none", *STATIC, "dynamic")


def max_local_layers(c1: float, num_layers: int) -> int:
    return int(math.floor(c1 * num_layers + 1e-9))


def start_epoch(c2: float, epochs: int) -> int:
    return int(math.floor(c2 * epochs + 1e-9))


def progress(epoch: int, c2: float, epochs: int) -> float:
    """0 before the start epoch, rising to 1 at the last epoch (epoch indices are 0-based)."""
    e0 = start_epoch(c2, epochs)
    span = max(1, epochs - e0)
    return min(1.0, max(0.0, (epoch - e0 + 1) / span))


def shape(kind: str, p: float, exp_rate: float = 3.0) -> float:
    """The schedule's curve on [0, 1] -> [0, 1]: monotone, f(0) = 0, f(1) = 1."""
    if kind == "linear":
        return p
    if kind == "quadratic":
        return p * p
    if kind == "exponential":
        return math.expm1(exp_rate * p) / math.expm1(exp_rate)
    if kind == "none":
        return 0.0
    raise ValueError(f"not a static schedule: {kind}")


def static_layers(kind: str, epoch: int, epochs: int, num_layers: int, c1: float, c2: float,
                  exp_rate: float = 3.0) -> int:
    """N(E): how many leading layers are updated locally at `epoch` (before rounding to a block)."""
    n_max = max_local_layers(c1, num_layers)
    value = n_max * shape(kind, progress(epoch, c2, epochs), exp_rate)
    return min(n_max, int(math.floor(value + 1e-9)))


class DynamicSelector:
    """Algorithm 1: shift the boundary when the transition layer's SGD update norm drops below
    α × its running average. Holds one running average per layer index."""

    def __init__(self, alpha: float, shift_layers: int, ema_decay: float):
        self.alpha, self.shift_layers, self.decay = alpha, max(1, shift_layers), ema_decay
        self.avg: dict[int, float] = {}

    def observe(self, norms: dict[int, float], transition: int) -> tuple[bool, float]:
        """Feed this epoch's update norms (layer index -> ‖ΔW‖) of the SGD layers; return (shift?,
        the transition layer's running average before this epoch)."""
        reference = self.avg.get(transition, math.nan)
        current = norms.get(transition, math.nan)
        shift = not math.isnan(reference) and current < self.alpha * reference
        for index, value in norms.items():
            old = self.avg.get(index)
            self.avg[index] = value if old is None else self.decay * old + (1 - self.decay) * value
        return shift, reference

    def target(self, transition: int) -> int:
        return transition + self.shift_layers
