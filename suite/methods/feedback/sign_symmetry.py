"""Sign-symmetric feedback: `usf`, `brsf`, `frsf` (Liao, Leibo & Poggio 2016, arXiv 1510.05067;
Moskovitz, Litwin-Kumar & Abbott 2018, arXiv 1812.06488), as BioTorch defines them
(jsalbert/biotorch, `biotorch/layers/fa_constructor/{linear,conv}.py`).

Like FA, every conv/linear layer sends the error to its input through a matrix B of W's shape
instead of W (the same Functions as `fa`, fa.py); unlike FA, B takes the *current* signs of W at
every step and only its magnitudes are not W's:

  usf   B = s · sign(W)            s: one number per layer, the std of the init distribution
                                   (Xavier: sqrt(2/(fan_in+fan_out)); BioTorch's "scaling factor",
                                   after Xiao et al. 2018, arXiv 1811.03567, to keep signals from
                                   exploding)
  brsf  B = |M| ⊙ sign(W)          M redrawn from the init distribution at every step (batch)
  frsf  B = |M| ⊙ sign(W)          M drawn once at setup and fixed

B is rebuilt from W before every forward pass, so the backward of a step uses the signs of the
weights that produced its forward pass (as BioTorch, which builds B inside the layer's forward).
With magnitudes |W| the rule is BP exactly (B = |W| ⊙ sign(W) = W; a test checks it).

`magnitude` chooses the init distribution BioTorch's layers would use: `xavier` (its benchmark
configs, `init: xavier`: U(±sqrt(6/(fan_in+fan_out)))) or `kaiming` (PyTorch's default layer
init, U(±1/sqrt(fan_in)), std 1/sqrt(3·fan_in)). Draws come from the method's seeded generator
(BioTorch's brsf uses the global torch RNG, so its draws cannot be matched, only their law).

Metrics (off the clock, `diagnostics`): the weight alignment (angle between W and the B of the
last step, per layer: BioTorch's `compute_alignment`; for frsf BioTorch measures the angle to
the stored |M| instead, a quirk not copied) and the gradient alignment on the probe split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from suite.methods.feedback.alignment import AlignmentProbe
from suite.methods.feedback.fa import FeedbackMode, WeightFeedback
from suite.methods.feedback.matrices import xavier_bound
from suite.methods.optim import OptimHParams
from suite.params import param


def init_bound(shape: tuple[int, ...], magnitude: str) -> float:
    """Bound b of the uniform init U(−b, b) BioTorch would draw a layer of this shape from."""
    if magnitude == "xavier":
        return xavier_bound(shape)
    fan_in = shape[1] * (math.prod(shape[2:]) if len(shape) > 2 else 1)
    return 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)): PyTorch's default Conv/Linear init


@dataclass(frozen=True)
class SignSymmetryHParams(OptimHParams):
    magnitude: str = param("xavier", "distribution of the feedback magnitudes: xavier (BioTorch's benchmark "
                                     "configs) or kaiming (PyTorch's default layer init); usf uses its std",
                           choices=("xavier", "kaiming"))
    align_samples: int = param(128, "samples of the fixed probe batch for gradient alignment; 0 = off", low=0)
    align_every: int = param(1, "measure alignment every N epochs", low=1)
    log_layers: int = param(24, "log the weight-alignment angle of the first N layers (and their mean)", low=0)


class SignSymmetric(WeightFeedback):
    """B_l = magnitude_l ⊙ sign(W_l), rebuilt every step; subclasses say where magnitudes come from."""

    HParams = SignSymmetryHParams

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.feedback: list[torch.Tensor] = []  # the B of the latest step (or of setup)
        self.routes: FeedbackMode | None = None

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.layers = model.layers()
        self.bounds = [init_bound(tuple(layer.weight.shape), self.hp.magnitude) for layer in self.layers]
        device = self.layers[0].weight.device
        # a generator on the weights' device, seeded from the method's generator, for per-step draws
        self.device_gen = torch.Generator(device=device).manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=ctx.generator)))
        self.init_magnitudes()
        self.optim = self.make_optimiser()
        self.probe = AlignmentProbe(model, ctx.data, self.hp.align_samples, self.hp.align_every)
        self.rebuild()

    def init_magnitudes(self) -> None:
        """Draw what is fixed for the whole run (nothing by default)."""

    def magnitudes(self) -> list[torch.Tensor | float]:
        """Per layer, the magnitudes of B for the coming step (a number or a tensor of W's shape)."""
        raise NotImplementedError

    def draw_abs(self, i: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """|M| for layer i, M ~ U(−b, b): U(0, b), in W's shape and memory format (into `out`)."""
        out = torch.empty_like(self.layers[i].weight) if out is None else out
        return out.uniform_(0.0, self.bounds[i], generator=self.device_gen)

    @torch.no_grad()
    def rebuild(self) -> None:
        """B_l = magnitude_l ⊙ sign(W_l), written into the same buffers every step (one allocation
        at setup; the routing below keeps pointing at them)."""
        if not self.feedback:
            self.feedback = [torch.empty_like(layer.weight) for layer in self.layers]
            self.routes = FeedbackMode({id(layer.weight): fb for layer, fb in zip(self.layers, self.feedback)})
        for layer, fb, m in zip(self.layers, self.feedback, self.magnitudes()):
            torch.sign(layer.weight, out=fb).mul_(m)

    def mode(self) -> FeedbackMode:
        return self.routes

    def before_step(self) -> None:
        self.rebuild()  # the coming step's backward uses the signs of the weights it runs forward with


class USF(SignSymmetric):
    name = "usf"
    summary = "uniform sign-concordant feedback: B = s·sign(W), s the init std per layer"
    source = ("Liao, Leibo & Poggio 2016 (arXiv 1510.05067); scaled as BioTorch's usf layers "
              "(jsalbert/biotorch, biotorch/layers/usf)")

    def magnitudes(self):
        return [b / math.sqrt(3.0) for b in self.bounds]  # std of U(−b, b)


class BRSF(SignSymmetric):
    name = "brsf"
    summary = "batchwise random-magnitude sign-concordant feedback: B = |M|⊙sign(W), M redrawn every step"
    source = ("Liao, Leibo & Poggio 2016 (arXiv 1510.05067); Moskovitz et al. 2018 (arXiv 1812.06488); "
              "as BioTorch's brsf layers (jsalbert/biotorch, biotorch/layers/brsf)")

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.scratch: list[torch.Tensor] = []  # this step's |M|, redrawn in place

    def magnitudes(self):
        if not self.scratch:
            self.scratch = [torch.empty_like(layer.weight) for layer in self.layers]
        return [self.draw_abs(i, out) for i, out in enumerate(self.scratch)]


class FRSF(SignSymmetric):
    name = "frsf"
    summary = "fixed random-magnitude sign-concordant feedback: B = |M|⊙sign(W), M drawn once"
    source = ("Liao, Leibo & Poggio 2016 (arXiv 1510.05067); Moskovitz et al. 2018 (arXiv 1812.06488); "
              "as BioTorch's frsf layers (jsalbert/biotorch, biotorch/layers/frsf)")

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.fixed: list[torch.Tensor] = []

    def init_magnitudes(self):
        self.fixed = [self.draw_abs(i) for i in range(len(self.layers))]

    def magnitudes(self):
        return self.fixed
