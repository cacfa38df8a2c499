"""Exact multiply-accumulate (MAC) counts of a sparsity-aware forward and backward, per layer.

For a conv layer Z = conv(X, W) (a linear layer is a 1×1 conv on N×C×1×1) with indicator tensors
I_X = 1[X≠0], I_dZ = 1[dZ≠0], I_W = 1[W≠0], every count is a sum over the *same* convolution
geometry (stride, padding, dilation, groups) as the layer, so borders and strides are exact:

    dense    Σ conv2d(1_X, 1_W)                  every in-bounds product (padding taps excluded)
    fwd      Σ conv2d(I_X, I_W)                  forward, zero inputs skipped
    dx_out   Σ I_X ⊙ conv_transpose(1_dZ, I_W)   backward-data, outputs dX at X = 0 not computed
    dx_in    Σ conv_transpose(I_dZ, I_W)         backward-data, zero dZ operands skipped
    dx_both  Σ I_X ⊙ conv_transpose(I_dZ, I_W)   both
    dw       Σ conv2d_weight(I_X, I_dZ)          backward-weight, zero X or dZ operands skipped

Each count is a number of (input, weight, output) triples, so by the adjoint identity
<conv(a, w), b> = <a, conv_transpose(b, w)> they are all evaluated as forward convolutions:
dx_out = fwd, dx_in = Σ I_dZ ⊙ conv2d(1_X, I_W), dx_both = Σ I_dZ ⊙ conv2d(I_X, I_W) and
dw = Σ I_dZ ⊙ conv2d(I_X, 1_W). With dense weights (the default: the paper exploits activation
sparsity, not weight sparsity) a conv with an all-ones kernel only needs, per group, the channel sum
of the indicator and a depthwise box filter, which is what makes sampling cheap; then
dw = dx_both as well. tests/test_sparsity.py checks every count against explicit Python loops and
against the literal conv_transpose / conv2d_weight formulas above.

The dense baseline counts in-bounds products only, so with no zeros anywhere every needed count
equals the dense one. Indicator convolutions run in float32 on CPU, which is exact because each
output is an integer at most C_in/groups·k_h·k_w < 2^24 (checked), and in float64 on GPUs (where
TF32 could round); products and sums are in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

EXACT_FLOAT32 = 2**24


@dataclass(frozen=True)
class Geometry:
    """What a Conv2d does to shapes; a Linear is the 1×1 case."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom (F.pad order)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"

    @property
    def fan_in(self) -> int:
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        left, right, top, bottom = self.padding
        return ((h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1)


def _same_padding(size: int, out: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def geometry_of(layer: nn.Module, in_hw: tuple[int, int] | None = None,
                out_hw: tuple[int, int] | None = None) -> Geometry:
    """The layer's geometry. When the observed output size (`out_hw`) disagrees with the module's
    attributes, as in TF-'same' convs that pad inside forward (timm's Conv2dSame), the padding is
    derived from the observed sizes the way those layers do it (extra pixel right/bottom)."""
    if isinstance(layer, nn.Linear):
        return Geometry(layer.in_features, layer.out_features, (1, 1))
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"not a Conv2d or Linear: {type(layer).__name__}")
    kh, kw = layer.kernel_size
    if isinstance(layer.padding, str):  # 'valid' or 'same' (stride 1): resolved from the shapes below
        pad = (0, 0, 0, 0)
    else:
        ph, pw = layer.padding
        pad = (pw, pw, ph, ph)
    geo = Geometry(layer.in_channels, layer.out_channels, (kh, kw), tuple(layer.stride), pad,
                   tuple(layer.dilation), layer.groups, layer.padding_mode)
    if in_hw is not None and out_hw is not None and geo.out_size(*in_hw) != tuple(out_hw):
        top, bottom = _same_padding(in_hw[0], out_hw[0], kh, geo.stride[0], geo.dilation[0])
        left, right = _same_padding(in_hw[1], out_hw[1], kw, geo.stride[1], geo.dilation[1])
        geo = Geometry(geo.in_channels, geo.out_channels, geo.kernel, geo.stride, (left, right, top, bottom),
                       geo.dilation, geo.groups, geo.padding_mode)
        if geo.out_size(*in_hw) != tuple(out_hw):
            raise ValueError(f"cannot infer the geometry of {layer}: {in_hw} -> {out_hw}")
    return geo


def as_conv_input(t: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Activations (or their gradients) in N×C×H×W; a linear layer's (..., C) becomes N'×C×1×1."""
    if t.ndim == 4:
        return t
    return t.reshape(-1, t.shape[-1], 1, 1)


def weight_as_conv(weight: torch.Tensor) -> torch.Tensor:
    return weight if weight.ndim == 4 else weight.reshape(*weight.shape, 1, 1)


@dataclass
class LayerMacs:
    """MAC counts of one layer (one or more calls). `dense_dx` is 0 when the layer's input needs no
    gradient (the network input): no backward-data is done then, dense or sparse."""

    dense: float = 0.0
    fwd: float = 0.0
    dx_out: float = 0.0
    dx_in: float = 0.0
    dx_both: float = 0.0
    dw: float = 0.0
    dense_dx: float = 0.0

    def __add__(self, other: LayerMacs) -> LayerMacs:
        return LayerMacs(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    # backprop = backward-data + backward-weight; "train" = forward + backprop
    @property
    def dense_bwd(self) -> float:
        return self.dense_dx + self.dense

    @property
    def bwd_out(self) -> float:  # output sparsity only: dW has no skippable outputs, so it stays dense
        return self.dx_out + self.dense

    @property
    def bwd_in(self) -> float:
        return self.dx_in + self.dw

    @property
    def bwd_both(self) -> float:
        return self.dx_both + self.dw

    def speedups(self) -> dict[str, float]:
        """Modelled speedups = dense MACs / needed MACs (inf when nothing is needed)."""
        def ratio(a, b):
            return a / b if b else (1.0 if not a else math.inf)
        return {"speedup_fwd": ratio(self.dense, self.fwd),
                "speedup_bwd_out": ratio(self.dense_bwd, self.bwd_out),
                "speedup_bwd_in": ratio(self.dense_bwd, self.bwd_in),
                "speedup_bwd": ratio(self.dense_bwd, self.bwd_both),
                "speedup_train": ratio(self.dense + self.dense_bwd, self.fwd + self.bwd_both)}


def _pad_for(t: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, int | tuple[int, int]]:
    """Explicit padding (F.pad) so asymmetric and non-zero padding modes are exact; then padding=0.
    Padding with a mode other than zeros copies real inputs, so their indicators are copied too."""
    if not any(geo.padding):
        return t, 0
    if geo.padding_mode == "zeros":
        return F.pad(t, geo.padding), 0
    mode = {"circular": "circular", "reflect": "reflect", "replicate": "replicate"}[geo.padding_mode]
    return F.pad(t, geo.padding, mode=mode), 0


def _conv(t: torch.Tensor, weight: torch.Tensor, geo: Geometry, groups: int) -> torch.Tensor:
    t, pad = _pad_for(t, geo)
    if t.is_cuda:  # TF32 would round integer counts above 2^11: count in float64 on GPUs
        t, weight = t.double(), weight.double()
    return F.conv2d(t, weight, None, geo.stride, pad, geo.dilation, groups)


def _group_sum(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """N×C×H×W indicator -> N×groups×H×W count of nonzeros per group of channels."""
    n, c, h, w = mask.shape
    return mask.reshape(n, groups, c // groups, h, w).sum(2, dtype=torch.float32)


def _box(counts: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """conv2d with an all-ones kernel, per group: how many nonzero inputs feed each output."""
    groups = counts.shape[1]
    ones = torch.ones(groups, 1, *geo.kernel, device=counts.device, dtype=counts.dtype)
    return _conv(counts, ones, geo, groups)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ a ⊙ b (with broadcasting) in float64: exact for these integer counts."""
    return float((a.double() * b.double()).sum())


@torch.no_grad()
def count_macs(x_mask: torch.Tensor, dz_mask: torch.Tensor, geo: Geometry, *, need_dx: bool = True,
               w_mask: torch.Tensor | None = None) -> LayerMacs:
    """Exact MAC counts for one call of a layer.

    x_mask:  bool N×C_in×H×W (or (..., C_in) for linear): nonzero layer inputs.
    dz_mask: bool N×C_out×H_out×W_out: nonzero gradients at the layer output.
    w_mask:  bool weight-shaped indicator of nonzero weights, or None for dense weights.
    need_dx: False when the layer input requires no gradient (no backward-data at all).
    """
    if geo.fan_in >= EXACT_FLOAT32:
        raise ValueError(f"fan-in {geo.fan_in} too large for exact float32 counting")
    x_mask, dz_mask = as_conv_input(x_mask, geo), as_conv_input(dz_mask, geo)
    n, c_in, h, w = x_mask.shape
    g = geo.groups
    per_group_out = geo.out_channels // g
    ones_in = torch.ones(1, g, h, w, device=x_mask.device)
    box_one = _box(ones_in, geo) * (c_in // g)  # 1×g×Ho×Wo: inputs feeding each output position
    box_x = _box(_group_sum(x_mask, g), geo)  # N×g×Ho×Wo: nonzero inputs feeding each output
    dz_per_group = _group_sum(dz_mask, g)  # N×g×Ho×Wo: nonzero output gradients per group

    dense = n * per_group_out * float(box_one.double().sum())
    dw = _dot(dz_per_group, box_x)
    if w_mask is None:
        fwd = per_group_out * float(box_x.double().sum())
        dx_in, dx_both = _dot(dz_per_group, box_one), dw
    else:
        w_ind = weight_as_conv(w_mask).float()
        through_w = _conv(x_mask.float(), w_ind, geo, g)  # N×C_out×Ho×Wo
        fwd = float(through_w.double().sum())
        dx_both = _dot(dz_mask, through_w)
        dx_in = _dot(dz_mask, _conv(torch.ones(1, c_in, h, w, device=x_mask.device), w_ind, geo, g))
    if not need_dx:
        return LayerMacs(dense=dense, fwd=fwd, dw=dw)
    return LayerMacs(dense=dense, fwd=fwd, dx_out=fwd, dx_in=dx_in, dx_both=dx_both, dw=dw, dense_dx=dense)
