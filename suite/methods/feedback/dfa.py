"""`dfa` (Nøkland 2016) and `bdfa` (binary DFA, Han & Yoo 2019).

DFA: the output error e = dL/dlogits is projected to every feedback point by a fixed random
matrix B_l (C·H·W × n_classes for a conv output, n_l × n_classes for a linear one);
δ_l = (B_l e) ⊙ f'(a_l); ΔW_l = −η δ_l h_{l−1}ᵀ; the head gets its true gradient. With
`granularity=layer` (default; Nøkland's per-layer DFA) every conv/linear layer gets its own
point (see `engine.py`) and every layer's input is detached, so each layer computes only its
weight gradient: no backward-data convolution runs anywhere, which is what makes a DFA step
cheaper than a BP step. With `granularity=block` the points are the stem and block outputs and
BP runs inside each block.

BDFA: the same with feedback entries in {−1, +1}, stored as int8, times one scale per layer,
1/sqrt(dim_l · n_classes) (so B_l has the variance of the gaussian default). The ±1 entries are
from the paper's abstract and DF-LNPU's "adder-only" hardware [V]; the i.i.d. sign draw and the
scale are reconstructions (the paper's initialisation rule is not available).

`style=biotorch` (layer_dfa.py) is BioTorch's variant: the projection replaces the gradient
reaching each conv/linear layer's *input* instead of entering at its output side, through
kernel-shaped Xavier-uniform matrices, and BatchNorm, activations and shortcuts keep
backpropagating. The default stays Nøkland's (the suite's existing results use it).

Defaults: the suite's SGD recipe (OptimHParams) — Han et al.'s optimiser settings are not
available; Launay et al. train with a small learning rate, see the experiments' overrides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from suite.errors import UsageError
from suite.methods.base import Method
from suite.methods.feedback.alignment import GRADIENT_ALIGNMENT, AlignmentProbe, grads_wrt, units
from suite.methods.feedback.engine import FeedbackPlan, feedback_forward, point_layout
from suite.methods.feedback.layer_dfa import LayerInputFeedback
from suite.methods.feedback.matrices import INITS, build_bank
from suite.methods.optim import OptimHParams
from suite.metrics import measured
from suite.params import param

STYLES = ("nokland", "biotorch")
FEEDBACK_MB = measured("feedback/matrix_mb", "MB", "memory of the stored feedback matrices", was="feedback_mb")


@dataclass(frozen=True)
class DFAHParams(OptimHParams):
    style: str = param("nokland", "where the feedback enters: nokland (B_l e at each layer's output side, "
                                  "inputs detached; dense gaussian B) or biotorch (B_l e replaces each conv/"
                                  "linear layer's input gradient, BN/activations/shortcuts still backpropagate; "
                                  "kernel-shaped Xavier B, as BioTorch); see docs/feedback-alignment.md",
                       choices=STYLES)
    granularity: str = param("layer", "feedback points: every conv/linear layer (Nøkland) or every "
                                      "stem/block output (BP inside blocks); nokland style only",
                             choices=("layer", "block"))
    feedback: str = param("gaussian", "feedback init: gaussian (Launay et al. scaling), uniform, "
                                      "binary (±1), sparse (strided pattern; a reconstruction); nokland style "
                                      "only (biotorch style draws Xavier-uniform)", choices=INITS)
    feedback_scale: float = param(1.0, "multiplies every B_l (nokland: entries of std 1/sqrt(dim_l·n_classes); "
                                       "biotorch: Xavier-uniform)", low=0.0, low_open=True)
    feedback_shared: bool = param(False, "one feedback matrix for all points, each point taking its first dim_l "
                                         "rows (Launay et al.'s dfatorch: equal-sized points get the same signal); "
                                         "nokland style only", hash_default=False)
    sparse_stride: int = param(2, "sparse feedback: keep 1 entry in `sparse_stride` (strided pattern)", low=1)
    align_samples: int = param(128, "samples of the fixed probe batch for gradient alignment; 0 = off", low=0)
    align_every: int = param(1, "measure gradient alignment every N epochs", low=1)


class DFA(Method):
    name = "dfa"
    HParams = DFAHParams
    METRICS = (FEEDBACK_MB, *GRADIENT_ALIGNMENT)
    summary = "direct feedback alignment: output error projected to every layer by fixed random matrices"
    source = ("Nøkland 2016 (DFA); feedback scaling of Launay et al. 2019 (lightonai/principled-dfa-training); "
              "conv outputs get a C×H×W-shaped projection; style=biotorch follows jsalbert/biotorch "
              "(biotorch/layers/dfa)")

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.direct: LayerInputFeedback | None = None  # the biotorch style's feedback

    def reject_settings(self, model, run, device):
        if self.hp.style == "biotorch":
            odd = {k: v for k, v in (("granularity", "layer"), ("feedback", "gaussian"), ("sparse_stride", 2),
                                     ("feedback_shared", False))
                   if getattr(self.hp, k) != v}
            if odd:
                raise UsageError(f"{self.name}: style=biotorch always uses per-layer, Xavier-uniform, kernel-shaped "
                                 f"feedback; {', '.join(f'{k}={v}' for k, v in odd.items())} applies to "
                                 f"style=nokland only")

    def plan(self, model) -> FeedbackPlan:
        return FeedbackPlan.uniform(len(units(model)), "dfa", self.hp.granularity == "layer")

    def setup(self, model, ctx):
        super().setup(model, ctx)
        sample = ctx.data.fetch(torch.arange(min(2, len(ctx.data.train)), device=ctx.data.device))
        if self.hp.style == "biotorch":
            self.direct = LayerInputFeedback(model, sample, ctx.num_classes, ctx.generator, self.hp.feedback_scale)
            self.bank = self.direct.bank
        else:
            self.feedback_plan = self.plan(model)
            shapes, channels_last = point_layout(model, sample, self.feedback_plan)
            self.bank = build_bank(shapes, channels_last, ctx.num_classes, self.hp.feedback, ctx.generator,
                                   self.hp.feedback_scale, self.hp.sparse_stride,
                                   self.hp.feedback_shared).to(ctx.device)
        self.optim = self.make_optimiser()
        self.probe = AlignmentProbe(model, ctx.data, self.hp.align_samples, self.hp.align_every)

    def forward(self, x):
        """Logits whose backward is the whole DFA update (e to the head, the projections elsewhere)."""
        if self.direct is not None:
            return self.direct.forward(x)
        return feedback_forward(self.model, x, self.feedback_plan, self.bank)[0]

    def train_step(self, batch):
        self.model.train()
        logits = self.forward(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.optim.step(loss)  # nokland: no gradient crosses a point; biotorch: none reaches W through an input
        return self.step_stats(logits, batch.y, loss)

    def signals(self, x, y):
        """The gradient this method delivers to each unit output (for the alignment probe)."""
        if self.direct is not None:
            logits, outs = self.direct.unit_forward(x)
        else:
            logits, _, outs = feedback_forward(self.model, x, self.feedback_plan, self.bank)
        return grads_wrt(self.loss_fn(logits, y), outs)

    def diagnostics(self, epoch):
        out = {FEEDBACK_MB.key: (self.bank.matrix.numel() * self.bank.matrix.element_size()) / 2**20}
        if self.probe.due(epoch):
            out |= self.probe.measure(self.signals)
        return out


@dataclass(frozen=True)
class BDFAHParams(DFAHParams):
    style: str = param("nokland", "binary DFA is Nøkland-style (see dfa)", choices=("nokland",))
    feedback: str = param("binary", "binary DFA: entries ±1 (int8) × 1/sqrt(dim_l·n_classes)", choices=("binary",))


class BDFA(DFA):
    name = "bdfa"
    HParams = BDFAHParams
    summary = "binary DFA: ±1 feedback matrices stored as int8 with one scale per layer"
    source = ("Han & Yoo 2019 (arXiv 1901.01986) BDFA; ±1 i.i.d. entries and the 1/sqrt(dim·n_classes) "
              "scale are reconstructions")
