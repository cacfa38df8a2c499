"""Launay et al.'s "bottleneck" network (arXiv 1906.04554; lightonai/principled-dfa-training,
`bottleneck.py` and `dfatools/models.py`): a 800-800-800 tanh MLP whose second layer only lets a
fraction k/800 of its gradients through.

The bottleneck is not a narrow layer. Every layer is 800 wide in the forward pass; the second
linear layer (`Bottleneck` in the authors' code, a subclass of `nn.Linear`) has a backward hook
that multiplies each of its input gradients (weight, bias and the gradient passed down to layer
1) by a fixed random 0/1 mask that keeps each entry with probability k/800. The masks are drawn
once and reused for the whole run. So k limits how many of the layer's weights can ever learn,
and how much learning signal reaches the first layer, while the layer's width stays 800.

Blocks follow the authors' feedback points. Their DFA wiring adds a feedback point after every
module of exact type `nn.Linear` and its activation. `Bottleneck` fails that type test, so the
points sit after the second and third tanh only. Layers 1 and 2 learn by backpropagating the
signal injected after the second tanh. Here, block 1 = linear, tanh, masked linear, tanh; block 2 =
linear, tanh; head = linear. DFA with `granularity=block` injects at those two block outputs and
backpropagates inside block 1, which is the same wiring.

The gradient mask on the layer input has the shape of the batch, as the authors' hook sees it
(`grad_input` of the addmm: batch × 800). Their mask is drawn at the first backward from a batch
of 128 and reused; batches keep their slot masks. Here the mask covers up to `MASK_ROWS` batch
slots, drawn at construction from the global RNG, which the harness seeds. Row i masks the i-th
sample of every batch; a batch larger than `MASK_ROWS` reuses the rows cyclically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError
from suite.models.staged import SequentialBlock, StagedModel

WIDTH = 800
MASK_ROWS = 1024


class _MaskedGradLinear(torch.autograd.Function):
    """y = x Wᵀ + b forward; backward multiplies each gradient by its fixed 0/1 mask."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask_input, mask_weight, mask_bias):
        ctx.save_for_backward(x, weight, mask_input, mask_weight, mask_bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mask_input, mask_weight, mask_bias = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            rows = torch.arange(grad.shape[0], device=grad.device) % mask_input.shape[0]
            grad_x = (grad @ weight) * mask_input[rows]
        if ctx.needs_input_grad[1]:
            grad_w = (grad.t() @ x) * mask_weight
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0) * mask_bias
        return grad_x, grad_w, grad_b, None, None, None


class GradientMaskedLinear(nn.Linear):
    """A linear layer whose gradients pass only where fixed random masks are 1 (keep rate `keep`)."""

    def __init__(self, in_features: int, out_features: int, keep: float):
        super().__init__(in_features, out_features)
        self.keep = keep
        # The authors keep an entry where rand > 1 − k/800, i.e. with probability k/800.
        self.register_buffer("mask_input", (torch.rand(MASK_ROWS, in_features) < keep).float())
        self.register_buffer("mask_weight", (torch.rand(out_features, in_features) < keep).float())
        self.register_buffer("mask_bias", (torch.rand(out_features) < keep).float())

    def forward(self, x):
        if x.dim() != 2:
            raise ValueError(f"GradientMaskedLinear expects (batch, features) input, got shape {tuple(x.shape)}")
        return _MaskedGradLinear.apply(x, self.weight, self.bias, self.mask_input, self.mask_weight, self.mask_bias)


def parse_bottleneck_spec(spec: str) -> int:
    try:
        k = int(spec)
    except ValueError:
        k = 0
    if not 1 <= k <= WIDTH:
        raise UsageError(f"bad bottleneck spec '{spec}': give the number of gradient-passing units k, "
                         f"an integer in 1..{WIDTH} (e.g. bottleneck:28)")
    return k


def bottleneck(in_shape, num_classes, spec: str = "") -> StagedModel:
    k = parse_bottleneck_spec(spec)
    n_in = 1
    for size in in_shape:
        n_in *= size
    blocks = [SequentialBlock(nn.Linear(n_in, WIDTH), nn.Tanh(), GradientMaskedLinear(WIDTH, WIDTH, k / WIDTH),
                              nn.Tanh()),
              SequentialBlock(nn.Linear(WIDTH, WIDTH), nn.Tanh())]
    return StagedModel(nn.Flatten(), blocks, nn.Linear(WIDTH, num_classes), name=f"bottleneck:{k}")
