"""`fa`: feedback alignment (Lillicrap et al. 2016). Every conv/linear layer keeps its forward
weight W for the forward pass and the weight gradient, but the backward pass propagates the
error to the layer's input through a fixed random matrix B of W's shape instead of W:
grad_x = g·B (linear), conv2d_input(B, g) (conv). With B = W it is BP exactly (a test checks it).

The substitution is done by a TorchFunctionMode around the method's forward: each F.linear /
F.conv2d call whose weight has a feedback matrix runs as a custom autograd Function. The model's
modules are not changed, so `predict`, checkpoints and other methods see an ordinary model.

Feedback init (`feedback`): by default (gaussian, uniform, binary, sparse; see matrices.py) B has
the standard deviation of the layer's weight at setup, so it follows whatever init the model
uses (a reconstruction of "initialise the feedback like the weights"). `xavier` draws B from
Xavier-uniform, U(±sqrt(6/(fan_in+fan_out))) with W's fans, as BioTorch's FA layers do
(`biotorch/layers/fa_constructor`, `init: xavier`): the BioTorch-compatible setting. The
default stays the std-matched gaussian so that existing cells keep their meaning; with
`init=xavier` both have the same variance, only the distribution's shape differs. B is
multiplied by `feedback_scale`. Each layer's B is drawn from ctx.generator in `model.layers()`
order. A step costs the same as a BP step (ratio ≈ 1).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode

from suite.methods.base import Method
from suite.methods.feedback.alignment import (
    GRADIENT_ALIGNMENT,
    WEIGHT_ALIGNMENT,
    AlignmentProbe,
    bp_unit_grads,
    weight_alignment,
)
from suite.methods.feedback.matrices import INITS, draw, xavier_uniform
from suite.methods.optim import OptimHParams
from suite.params import param


class FALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = (grad @ feedback) if ctx.needs_input_grad[0] else None
        gw = g2.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class FAConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(x, feedback)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        need = ctx.needs_input_grad
        # one aten call: grad_input through B (the only change from BP), grad_weight and grad_bias as in BP
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, feedback, [feedback.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, [need[0], need[1], has_bias and need[2]])
        return gx, gw, gb if has_bias else None, None, None, None, None, None


_CONV_SIG = inspect.signature(lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None)
_CONV_NAMES = tuple(_CONV_SIG.parameters)


def _conv_padding(padding, weight, dilation) -> list[int]:
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0]
        return [d * (k - 1) // 2 for d, k in zip(dilation, weight.shape[2:])]  # 'same', odd kernels
    return list(_pair(padding))


class FeedbackMode(TorchFunctionMode):
    """Routes F.linear / F.conv2d of the layers in `feedback` (keyed by weight identity) through
    autograd Functions that change the backward pass to the layer's input: FA's (through B) by
    default; a subclass names other Functions with the same signatures (`linear_fn(x, w, b, fb)`,
    `conv_fn(x, w, b, fb, stride, padding, dilation, groups)`), e.g. BioTorch-style DFA."""

    linear_fn = FALinear
    conv_fn = FAConv2d

    def __init__(self, feedback: dict[int, object]):
        super().__init__()
        self.feedback = feedback

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            # nn.Conv2d calls F.conv2d with 7 positional arguments: unpack them without binding
            a = dict(zip(_CONV_NAMES, args)) if len(args) == 7 and not kwargs else _CONV_SIG.bind(*args, **kwargs).arguments
            fb = self.feedback.get(id(a["weight"]))
            if fb is not None:
                weight, dilation = a["weight"], list(_pair(a.get("dilation", 1)))
                return self.conv_fn.apply(a["input"], weight, a.get("bias"), fb, list(_pair(a.get("stride", 1))),
                                          _conv_padding(a.get("padding", 0), weight, dilation), dilation,
                                          a.get("groups", 1))
        elif func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            fb = self.feedback.get(id(weight))
            if fb is not None:
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                return self.linear_fn.apply(args[0] if args else kwargs["input"], weight, bias, fb)
        return func(*args, **kwargs)


FA_INITS = INITS + ("xavier",)


@dataclass(frozen=True)
class FAHParams(OptimHParams):
    feedback: str = param("gaussian", "feedback init: gaussian, uniform, binary (±std), sparse (strided "
                                      "pattern), all with the std of the layer's weight at setup; or xavier "
                                      "(Xavier-uniform from B's fans, BioTorch's FA layers)", choices=FA_INITS)
    feedback_scale: float = param(1.0, "multiplies every B", low=0.0, low_open=True)
    sparse_stride: int = param(2, "sparse feedback: keep 1 entry in `sparse_stride`", low=1)
    align_samples: int = param(128, "samples of the fixed probe batch for gradient alignment; 0 = off", low=0)
    align_every: int = param(1, "measure alignment every N epochs", low=1)
    log_layers: int = param(24, "log the weight-alignment angle of the first N layers (and their mean)", low=0)


def draw_fa_feedback(weight: torch.Tensor, kind: str, gen: torch.Generator, scale: float = 1.0,
                     stride: int = 2) -> torch.Tensor:
    """One layer's FA matrix B, in W's shape and memory format, times `scale`."""
    w = weight.detach()
    if kind == "xavier":
        b, std = xavier_uniform(tuple(w.shape), gen), 1.0
    else:
        b, std = draw(kind, w.shape[0], w[0].numel(), gen, stride).float().view_as(w), w.float().std()
    # W's exact strides, not just its memory format: for a 1-channel conv both formats hold, but
    # oneDNN picks its backward layout from the strides, and a mismatch with the layer's own
    # weight costs a layout conversion of the gradient every step (measured on LeNet: FA's step
    # 9–25% slower than uSF's with the mismatch, equal without).
    b = torch.empty_like(w, dtype=b.dtype).copy_(b.to(w.device))
    return b * (std * scale)


class WeightFeedback(Method):
    """The update every weight-feedback method shares (fa, usf, brsf, frsf): each conv/linear layer
    sends the error to its input through its feedback matrix B instead of W, weight gradients as in
    BP. Subclasses give `mode()` (the layer → B routing) and may refresh B in `before_step()`;
    they own `self.layers`, `self.feedback`, `self.probe` and `self.optim`."""

    METRICS = (*WEIGHT_ALIGNMENT, *GRADIENT_ALIGNMENT)

    def mode(self) -> FeedbackMode:
        raise NotImplementedError

    def before_step(self) -> None:
        """Refresh what B depends on (nothing for fixed feedback)."""

    def train_step(self, batch):
        self.model.train()
        self.before_step()
        with self.mode():
            logits = self.model(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.optim.step(loss)
        return self.step_stats(logits, batch.y, loss)

    def signals(self, x, y):
        with self.mode():
            return bp_unit_grads(self.model, x, y)

    def diagnostics(self, epoch):
        out = weight_alignment(self.layers, self.feedback, self.hp.log_layers)
        if self.probe.due(epoch):
            out |= self.probe.measure(self.signals)
        return out


class FA(WeightFeedback):
    name = "fa"
    HParams = FAHParams
    summary = "feedback alignment: backward pass through fixed random matrices instead of Wᵀ"
    source = "Lillicrap et al. 2016; as benchmarked by BioTorch (jsalbert/biotorch, Sanfiz & Akrout 2021)"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.layers = model.layers()
        self.feedback = [draw_fa_feedback(layer.weight, self.hp.feedback, ctx.generator, self.hp.feedback_scale,
                                          self.hp.sparse_stride) for layer in self.layers]
        self.optim = self.make_optimiser()
        self.probe = AlignmentProbe(model, ctx.data, self.hp.align_samples, self.hp.align_every)

    def mode(self) -> FeedbackMode:
        return FeedbackMode({id(layer.weight): fb for layer, fb in zip(self.layers, self.feedback)})
