"""`local`: LoCal+SGD — a localized (Hebbian) prefix of the network and an SGD suffix, with the
Localized→SGD transition layer moved deeper by a static or dynamic schedule (Krithivasan, Sen,
Venkataramani, Raghunathan, Frontiers in Neuroscience 2022, DOI 10.3389/fnins.2021.759807; what is
verified and what is reconstructed: docs/papers.md#krithivasan2022, docs/local-learning.md).

One training step:
  1. the prefix (stem and the first blocks) runs under `torch.no_grad()`: no autograd graph, no
     activation kept for backward, no backward pass through it. A forward hook on each of its
     conv/linear layers applies the local rule (`hebbian.py`) with the layer's own input and
     output — the update is computed during the forward pass, one GEMM per layer;
  2. the suffix (remaining blocks and head) runs with autograd from the prefix's (grad-free)
     output, and the usual loss.backward() + SGD step updates only the suffix. Prefix parameters
     keep `.grad is None`, so the optimiser skips them entirely (no momentum, no weight decay).

Layers, boundary and BatchNorm (suite choices; see `boundary.py`): layers are the entries of
`model.layers()`; a block's shortcut conv counts as one of its block's layers; the head is never
localized; the boundary falls on a block boundary (rounded down). BatchNorm inside the prefix is
*frozen* in its affine parameters (γ, β get no gradient and have no local rule) but stays in train
mode, so its running statistics keep tracking the slowly changing Hebbian weights. Conv/linear
biases in the prefix are frozen as well.

Weak supervision (RECONSTRUCTION: the paper says only that the learning rate of localized updates
is controlled by the overall training loss): two exponential averages of the training loss are kept
on the device, a fast one (decay `loss_fast`) and a slow one (`loss_slow`); their ratio
r = slow/fast exceeds 1 while the loss is falling. The local rate of the next step is
η_L · s with s = min(r, `supervision_max`) when r ≥ 1 and s = 0 when r < 1 (the loss is rising:
local updates pause). The first step uses s = 1. `weak_supervision=false` fixes s = 1.

Each layer switches mode at most once (SGD first, then local): the boundary never moves back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from suite.methods.base import Method
from suite.methods.local import boundary, hebbian, schedules
from suite.methods.optim import OptimHParams
from suite.metrics import measured
from suite.params import param

RATE_SCALE = measured("local/rate_scale", "1", "weak supervision's multiplier of the local rate, epoch mean")
TRANSITION = measured("local/transition_layer", "layer", "layers [0, t) learn by the local rule this epoch")
FRACTION = measured("local/localized_fraction", "fraction", "transition layer / number of layers")
UNITS = measured("local/localized_units", "1", "stem/blocks wholly local this epoch")
UPDATE_NORM = measured("local/update_norm", "1", "‖ΔW‖ of the transition layer over the epoch")
UPDATE_NORM_AVG = measured("local/update_norm_avg", "1", "dynamic schedule: its running average of that norm")
NEXT = measured("local/next_transition_layer", "layer", "transition layer chosen for the next epoch")


@dataclass(frozen=True)
class LocalHParams(OptimHParams):
    local_schedule: str = param(
        "quadratic", "learning-mode selection: none (= BP), linear/quadratic/exponential (static, N(E) from "
        "c1, c2) or dynamic (Algorithm 1). Quadratic is the paper's recommended static schedule. "
        "(Named local_schedule because `schedule` is the lr schedule.)", choices=schedules.SCHEDULES)
    c1: float = param(0.5, "maximum fraction of layers updated locally (all schedules; the paper's c1)",
                      low=0.0, high=1.0)
    c2: float = param(0.25, "static schedules: fraction of training before the first local layer "
                            "(the paper's c2, here a fraction of E_max; reconstruction)", low=0.0, high=0.99)
    exp_rate: float = param(3.0, "exponential schedule: curvature k of (e^{k p} − 1)/(e^k − 1)",
                            low=0.0, low_open=True)
    alpha: float = param(0.3, "dynamic: shift when this epoch's update norm < alpha × its running average "
                              "(paper: 0.1–0.5)", low=0.0, low_open=True, high=1.0)
    l_shift: float = param(0.125, "dynamic: shift by this fraction of the layers, at least one block "
                                  "(paper: 10–15%)", low=0.0, low_open=True, high=1.0)
    ema_decay: float = param(0.8, "dynamic: decay of the running average of update norms (not in the text)",
                             low=0.0, high=1.0)
    local_lr: float = param(1e-4, "η_L: relative per-step size of the local update (fraction of each filter's "
                                  "norm, before renormalisation); not in the text", low=0.0)
    weak_supervision: bool = param(True, "scale η_L by the training-loss trend (see the class docstring)")
    loss_fast: float = param(0.9, "weak supervision: decay of the fast loss average", low=0.0, high=1.0)
    loss_slow: float = param(0.99, "weak supervision: decay of the slow loss average", low=0.0, high=1.0)
    supervision_max: float = param(2.0, "weak supervision: cap of the rate multiplier", low=0.0)


class LocalSGD(Method):
    name = "local"
    HParams = LocalHParams
    METRICS = (RATE_SCALE, TRANSITION, FRACTION, UNITS, UPDATE_NORM, UPDATE_NORM_AVG, NEXT)
    summary = "LoCal+SGD: Hebbian prefix (no backward through it) + SGD suffix, boundary moved by a schedule"
    source = ("Krithivasan et al., Frontiers in Neuroscience 2022 (LoCal+SGD), §2.2 and Algorithm 1; "
              "rule, normalisation, weak supervision and schedule formulas reconstructed (docs/local-learning.md); "
              "SGD recipe as `bp`")

    def skip_reason(self, model, data):
        if self.hp.local_schedule == "none":
            return None
        for layer in model.layers():
            reason = hebbian.supported(layer)
            if reason:
                return f"local rule cannot update this model: {reason}"
        model_cuts = boundary.cuts(model)
        limit = schedules.max_local_layers(self.hp.c1, len(model.layers()))
        if self.hp.c1 > 0 and not any(0 < c.layers <= limit for c in model_cuts):
            return (f"no block boundary leaves at most {limit} of {len(model.layers())} layers local and the "
                    "rest to SGD (c1 too small for this model's blocks, or a single-block model)")
        return None

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self._hooks: list = []  # forward hooks of the localized layers, removed by close()

    def phase(self, epoch):
        """Epochs are grouped by how many layers learn locally during them (0 = plain SGD)."""
        return f"{self.transition_layer} local layers"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.layers = model.layers()
        self.units = [model.stem, *model.blocks]
        self.cuts = boundary.cuts(model)
        self.n_max = schedules.max_local_layers(self.hp.c1, len(self.layers))
        self.optim = self.make_optimiser()
        self.selector = schedules.DynamicSelector(
            self.hp.alpha, round(self.hp.l_shift * len(self.layers)), self.hp.ema_decay)
        self.cut = boundary.Cut(0, 0)
        self._learning = False  # hooks update weights only inside the prefix of a training step
        self._scale = torch.ones((), device=ctx.device)
        self._fast = self._slow = None
        self._move_to(self._static_cut(0))
        self._snapshot()

    # -- the boundary -----------------------------------------------------------------------

    @property
    def transition_layer(self) -> int:
        """Index in model.layers() of the first SGD layer = the number of local layers."""
        return self.cut.layers

    def _static_cut(self, epoch: int) -> boundary.Cut:
        if self.hp.local_schedule not in schedules.STATIC:
            return self.cut
        n = schedules.static_layers(self.hp.local_schedule, epoch, self.ctx.epochs, len(self.layers),
                                    self.hp.c1, self.hp.c2, self.hp.exp_rate)
        return boundary.round_down(self.cuts, n)

    def _dynamic_cut(self, norms: dict[int, float]) -> boundary.Cut:
        shift, _ = self.selector.observe(norms, self.transition_layer)
        if not shift:
            return self.cut
        target = boundary.round_down(self.cuts, min(self.n_max, self.selector.target(self.transition_layer)))
        if target.layers <= self.cut.layers:  # a shift moves at least one block
            target = boundary.next_cut(self.cuts, self.cut)
        return target if target.layers <= self.n_max else self.cut

    def _move_to(self, cut: boundary.Cut) -> None:
        if cut.layers <= self.cut.layers:  # the boundary only moves deeper: each layer switches once
            return
        for layer in self.layers[self.cut.layers:cut.layers]:
            self._hooks.append(layer.register_forward_hook(partial(self._local_hook)))
            for p in layer.parameters():
                p.grad = None
        self.cut = cut

    def _local_hook(self, layer, args, output):
        if self._learning:
            rate = self.hp.local_lr * self._scale
            hebbian.local_update(layer, args[0], output, rate)

    def _snapshot(self) -> None:
        """Weights of the SGD layers at the start of an epoch (dynamic: all of them, for their
        running averages; static: the transition layer, as a diagnostic)."""
        first = self.transition_layer
        last = len(self.layers) if self.hp.local_schedule == "dynamic" else min(first + 1, len(self.layers))
        self._start = {i: self.layers[i].weight.detach().clone() for i in range(first, last)}

    # -- training ---------------------------------------------------------------------------

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        if self.cut.units == 0:
            return self.model(x)
        prefix, suffix = self.units[:self.cut.units], self.units[self.cut.units:]
        with torch.no_grad():
            self._learning = True
            try:
                for unit in prefix:
                    x = unit(x)
            finally:
                self._learning = False
        for unit in suffix:
            x = unit(x)
        return self.model.head(x)

    def train_step(self, batch):
        self.model.train()
        scale = self._scale
        logits = self.forward_train(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.optim.step(loss)
        self._supervise(loss.detach())
        return self.step_stats(logits, batch.y, loss) | {RATE_SCALE.key: scale}

    @torch.no_grad()
    def _supervise(self, loss: torch.Tensor) -> None:
        """Weak supervision: the next step's local-rate multiplier from the loss trend (no sync)."""
        if not self.hp.weak_supervision:
            return
        if self._fast is None:
            self._fast, self._slow = loss.clone(), loss.clone()
        else:
            self._fast = self.hp.loss_fast * self._fast + (1 - self.hp.loss_fast) * loss
            self._slow = self.hp.loss_slow * self._slow + (1 - self.hp.loss_slow) * loss
        ratio = self._slow / self._fast.clamp_min(1e-12)
        self._scale = torch.where(ratio >= 1, ratio.clamp(max=self.hp.supervision_max), torch.zeros_like(ratio))

    def end_epoch(self, epoch):
        transition = self.transition_layer
        norms = {i: float((self.layers[i].weight.detach() - w0).norm()) for i, w0 in self._start.items()}
        out = {TRANSITION.key: float(transition), FRACTION.key: transition / len(self.layers),
               UNITS.key: float(self.cut.units), UPDATE_NORM.key: norms.get(transition, float("nan"))}
        if self.hp.local_schedule == "dynamic":
            avg = self.selector.avg.get(transition, float("nan"))
            out[UPDATE_NORM_AVG.key] = avg
            nxt = self._dynamic_cut(norms)
        else:
            nxt = self._static_cut(epoch + 1)
        self._move_to(nxt)
        self._snapshot()
        out[NEXT.key] = float(self.transition_layer)
        return out

    def close(self):
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
