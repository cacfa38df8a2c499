"""The localized (Hebbian) update of one conv/linear layer, computed from its forward pass alone.

Rule (RECONSTRUCTION; the paper's exact rule and normalisation are not in the available text):

    H     = (1/M) · Σ_m  y_m x_mᵀ            the Hebbian term: output × input, M = batch × output
                                            positions; for a conv layer this is the weight-gradient
                                            op with the output Y in place of dL/dY:
                                            torch.nn.grad.conv2d_weight(X, W.shape, Y) / M
    W_i  ← W_i + η · ‖W_i‖ · H_i / ‖H_i‖     per output unit i (row / filter): a step of relative
                                            size η in the Hebbian direction,
    W_i  ← W_i · ‖W_i^old‖ / ‖W_i‖           then each filter's norm is restored.

So one GEMM per layer (H) plus per-filter norms. X is the layer's input and Y its raw output (before
BatchNorm and activation): the output a forward hook sees. Norm preservation keeps every weight
bounded (each filter keeps its norm forever); to first order in η it is Oja's rule, whose
subtractive term is exactly the normalisation. Making the step relative (η = the fraction of the
filter's norm moved per step, before renormalisation) makes η independent of activation scales,
so one default serves MNIST MLPs and CIFAR ResNets. Biases are not updated by the local rule.
η is multiplied by the weak-supervision scale (see `method.py`), which may be a 0-dim tensor so
that no host-device sync is needed.
"""

from __future__ import annotations

import torch
from torch import nn

TINY = 1e-12


def supported(layer: nn.Module) -> str | None:
    """Why the local rule cannot handle this layer, or None."""
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return f"conv layer with padding {layer.padding!r}/{layer.padding_mode} (only explicit zero padding)"
        return None
    if isinstance(layer, nn.Linear):
        return None
    return f"{type(layer).__name__} is not a conv or linear layer"


def hebbian_term(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """H = (1/M) Σ y xᵀ, shaped like the layer's weight (one GEMM)."""
    if isinstance(layer, nn.Linear):
        x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        return y2.t() @ x2 / x2.shape[0]
    h = torch.nn.grad.conv2d_weight(x, layer.weight.shape, y, stride=layer.stride, padding=layer.padding,
                                    dilation=layer.dilation, groups=layer.groups)
    return h / (y.shape[0] * y.shape[2] * y.shape[3])


@torch.no_grad()
def norm_preserving_step(weight: torch.Tensor, direction: torch.Tensor, rate: float | torch.Tensor) -> None:
    """In place: W_i ← ‖W_i‖ · normalise(W_i + rate·‖W_i‖·D_i/‖D_i‖) for every output unit i."""
    w = weight.reshape(weight.shape[0], -1)
    d = direction.reshape(direction.shape[0], -1)
    w_norm = w.norm(dim=1, keepdim=True)
    moved = w + rate * w_norm * d / d.norm(dim=1, keepdim=True).clamp_min(TINY)
    moved = moved * (w_norm / moved.norm(dim=1, keepdim=True).clamp_min(TINY))
    weight.copy_(moved.reshape(weight.shape))


@torch.no_grad()
def local_update(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, rate: float | torch.Tensor) -> None:
    norm_preserving_step(layer.weight, hebbian_term(layer, x, y), rate)
