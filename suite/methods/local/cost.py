"""The most LoCal+SGD can save: a GEMM-count bound on its end-to-end speedup over BP.

A localized layer still runs its forward GEMM; what the method skips is the backward pass through
the localized prefix (the weight-gradient and input-gradient GEMMs of each local layer, and the
input gradient of the first SGD layer, whose input then needs none). Counting the Hebbian update
(itself one weight-sized GEMM per local layer) and every non-GEMM cost (BatchNorm, activations, the
optimiser, data) as free, BP's step costs

    Σ_l m_l (forward) + Σ_l m_l (weight gradients) + Σ_{l ≥ 1} m_l (input gradients)

and a step with the first T layers local costs

    Σ_l m_l + Σ_{l ≥ T} m_l + Σ_{l > max(T, 0)} m_l,

with m_l the forward multiply-accumulates of layer l (model.layers() order) for one sample. The
ratio of the sums over the epochs of a run, at the transition layer each epoch used, can only
overstate the speedup a real run measures.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(model: nn.Module, in_shape: tuple[int, ...]) -> list[int]:
    """The forward multiply-accumulates of each of `model.layers()` (conv or linear) for one input
    of shape `in_shape`, counted from the shapes its forward produces."""
    layers = model.layers()
    macs = [0] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def count(module, inputs, output, i=i):
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                macs[i] += output[0].numel() * per_output
            else:
                macs[i] += output[0].numel() * module.in_features
        hooks.append(layer.register_forward_hook(count))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *in_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return macs


def step_cost(macs: list[int], local: int) -> int:
    """The GEMM multiply-accumulates of one training step with the first `local` layers localized."""
    forward = sum(macs)
    weight_grads = sum(macs[local:])
    input_grads = sum(macs[max(local, 0) + 1:])
    return forward + weight_grads + input_grads


def speedup_bound(macs: list[int], local_per_epoch: list[int]) -> float:
    """BP's GEMM count over the method's for a run whose epoch e localized `local_per_epoch[e]` layers."""
    if not local_per_epoch:
        return 1.0
    bp = step_cost(macs, 0) * len(local_per_epoch)
    return bp / sum(step_cost(macs, t) for t in local_per_epoch)
