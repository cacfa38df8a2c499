"""BioTorch-style DFA (`dfa` with `style=biotorch`): the output error replaces the gradient that
reaches each conv/linear layer's *input*; everything else still backpropagates.

How BioTorch does it (jsalbert/biotorch, `biotorch/layers/dfa/{linear,conv}.py`,
`biotorch/module/biomodule.py`): the forward pass computes e = dL/dlogits once, and a backward
hook on every conv/linear layer throws away the gradient BP computed for the layer's input and
puts the projection of e in its place:

  linear layer with input h (n_in):     grad_h = e · B,          B: n_classes × n_in
  conv layer with input h (C×H×W):      grad_h = conv_transpose(ê, B),  B: n_classes × C × k × k,
                                        ê = e broadcast over the layer's output positions
                                        (n_classes × H_out × W_out, the same value everywhere)

with B Xavier-uniform (its `init: xavier`, fans of B's own shape). The layer's weight gradient is
BP's (from whatever gradient reaches its output); BatchNorm, activations, pooling and residual
shortcuts backpropagate as usual, so in a ResNet a block input receives its convolution's
projection *plus* the true gradient arriving along the shortcut. The head is a layer like the
others: its weight gets e, its input gets e·B_head. The first layer's B is never used (its input,
the image, needs no gradient).

Differences from the suite's Nøkland-style `dfa` (engine.py): there the feedback enters at each
layer's *output* side (the post-activation tensor the next layer reads, which is then detached,
so no gradient crosses it, shortcuts included), each point's B is a dense C·H·W × n_classes
gaussian with std 1/sqrt(dim·n_classes), and the head's input gets B e from its own point.

Implementation: because ê is constant over space and B is fixed, conv_transpose(ê, B) = e · M
with M = conv_transpose(one-hot class maps, B), a fixed (n_classes × C·H·W) matrix computed once
at setup (exact: the same sums in a different order; a test compares both). All layers' M are
concatenated in one FeedbackBank, so one GEMM per step projects e to every layer input, and no
backward-data convolution runs anywhere (BioTorch runs two per layer: BP's, then the feedback's).
The error is taken by an identity Function on the logits whose backward runs first in the
backward pass; each layer's Function reads its slice from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from suite.methods.feedback.alignment import units
from suite.methods.feedback.fa import FeedbackMode, _conv_padding
from suite.methods.feedback.matrices import FeedbackBank, xavier_uniform


class Relay:
    """Holds the projections e·M_l of the current backward pass (views of the bank's workspace)."""

    def __init__(self, bank: FeedbackBank):
        self.bank = bank
        self.signals: list[torch.Tensor] = []

    def receive(self, error: torch.Tensor) -> None:
        self.signals = self.bank.project(error)


@dataclass(frozen=True)
class Slot:
    relay: Relay
    index: int | None  # position in the bank; None: the layer's input needs no gradient


class ErrorTap(torch.autograd.Function):
    """Identity on the logits; its backward (the first node of the backward pass) projects e."""

    @staticmethod
    def forward(ctx, logits, relay):
        ctx.relay = relay
        return logits.clone()

    @staticmethod
    def backward(ctx, error):
        ctx.relay.receive(error)
        return error, None


def _input_signal(slot: Slot, needed: bool) -> torch.Tensor | None:
    if not needed or slot.index is None:
        return None
    return slot.relay.signals[slot.index]


class DirectInputLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, slot):
        ctx.save_for_backward(x)
        ctx.slot, ctx.has_bias = slot, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = _input_signal(ctx.slot, ctx.needs_input_grad[0])
        gw = g2.t() @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class DirectInputConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, slot, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.slot = slot
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        need = ctx.needs_input_grad
        # weight and bias gradients only: the input's gradient is the projected error
        _, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]] if has_bias else None, stride, padding, dilation,
            False, [0, 0], groups, [False, need[1], has_bias and need[2]])
        return _input_signal(ctx.slot, need[0]), gw, gb if has_bias else None, None, None, None, None, None


class DirectInputMode(FeedbackMode):
    linear_fn = DirectInputLinear
    conv_fn = DirectInputConv


@dataclass
class LayerInput:
    """What the dry run saw of one layer: its input's per-sample shape and format, whether the
    input needs a gradient, and (convs) the output's spatial size."""

    shape: tuple[int, ...]
    channels_last: bool
    needs_grad: bool
    out_hw: tuple[int, int] | None


def survey(model, x: torch.Tensor) -> list[LayerInput]:
    """One eval-mode forward (BatchNorm statistics untouched) recording every layer's input."""
    seen: dict[int, LayerInput] = {}

    def hook(module, args, out):
        h = args[0]
        cl = h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
        seen[id(module)] = LayerInput(tuple(h.shape[1:]), cl, h.requires_grad,
                                      tuple(out.shape[2:]) if out.dim() == 4 else None)
    handles = [layer.register_forward_hook(hook) for layer in model.layers()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [seen[id(layer)] for layer in model.layers()]


def kernel_shape(layer, num_classes: int) -> tuple[int, ...]:
    """B's shape as BioTorch stores it: n_classes × C_in (× k × k)."""
    if isinstance(layer, torch.nn.Conv2d):
        return (num_classes, layer.in_channels, *layer.kernel_size)
    return (num_classes, layer.in_features)


def dense_feedback(layer, kernel: torch.Tensor, info: LayerInput) -> torch.Tensor:
    """M (n_classes × dim of the layer input, C·H·W order) with e·M = the layer's BioTorch signal."""
    kernel = kernel.float()
    if not isinstance(layer, torch.nn.Conv2d):
        return kernel
    n = kernel.shape[0]
    c, h, w = info.shape
    onehot = torch.eye(n, device=kernel.device).view(n, n, 1, 1).expand(n, n, *info.out_hw)
    padding = _conv_padding(layer.padding, layer.weight, list(layer.dilation))
    maps = torch.nn.grad.conv2d_input((n, c, h, w), kernel, onehot.contiguous(), stride=layer.stride,
                                      padding=padding, dilation=layer.dilation)
    return maps.reshape(n, c * h * w)


class LayerInputFeedback:
    """The feedback of BioTorch-style DFA for one model: kernel-shaped B per layer, their dense
    equivalents in one bank, and the forward that routes the backward through them."""

    def __init__(self, model, sample: torch.Tensor, num_classes: int, gen: torch.Generator, scale: float = 1.0):
        self.model = model
        self.layers = model.layers()
        self.inputs = survey(model, sample)
        device = self.layers[0].weight.device
        self.kernels = [(xavier_uniform(kernel_shape(layer, num_classes), gen) * scale).to(device)
                        for layer in self.layers]
        self.load_kernels(self.kernels)

    def load_kernels(self, kernels: list[torch.Tensor]) -> None:
        """Use these kernel-shaped B (one per layer, `kernel_shape`); e.g. a peer's, for side-by-side tests."""
        self.kernels = [k.detach().clone() for k in kernels]
        used = [i for i, info in enumerate(self.inputs) if info.needs_grad]
        blocks, shapes, formats = [], [], []
        for i in used:
            m = dense_feedback(self.layers[i], self.kernels[i], self.inputs[i])
            info = self.inputs[i]
            if info.channels_last:  # the bank stores channels_last points' columns in H·W·C order
                c, h, w = info.shape
                m = m.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(m.shape[0], -1)
            blocks.append(m)
            shapes.append(info.shape)
            formats.append(info.channels_last)
        matrix = torch.cat(blocks, dim=1).contiguous()
        dims = sum(math.prod(s) for s in shapes)
        self.bank = FeedbackBank(matrix, torch.ones(dims, device=matrix.device), shapes, formats)
        self.relay = Relay(self.bank)
        index = dict(zip(used, range(len(used))))
        self.slots = {id(layer.weight): Slot(self.relay, index.get(i)) for i, layer in enumerate(self.layers)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with DirectInputMode(self.slots):
            logits = self.model(x)
        return ErrorTap.apply(logits, self.relay)

    def unit_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (with the tap) and every unit output, for the alignment probe."""
        outs = []
        h = x
        with DirectInputMode(self.slots):
            for unit in units(self.model):
                h = unit(h)
                outs.append(h)
            logits = self.model.head(h)
        return ErrorTap.apply(logits, self.relay), outs
