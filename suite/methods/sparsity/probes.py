"""Hooks that observe one training step: zeros in every conv/linear layer's input X and output
gradient dZ, zeros in every activation's output A and gradient dA, and the indicator masks the MAC
counter needs. Hooks are attached for a sampled step only and removed after it, so other steps run
exactly as plain BP; no hook returns a value, so the step computes exactly what BP computes.

Which activation "follows" a layer (for the per-layer dA and act_out columns) is taken from the
order of execution: the first activation module that runs after the layer and before the next
conv/linear layer. In Conv-BN-ReLU that is the layer's ReLU; where a residual add or a projection
shortcut comes in between, it is the activation after the add, or none (NaN). This association is
a reconstruction (the paper's text available here does not define it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from suite.methods.sparsity.macs import Geometry, LayerMacs, count_macs, geometry_of

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus)


def is_activation(module: nn.Module) -> bool:
    # timm's own activation classes (used where torch has no native one) live in timm.layers.activations*
    return isinstance(module, ACTIVATIONS) or type(module).__module__.startswith("timm.layers.activations")


def _zeros(t: torch.Tensor) -> torch.Tensor:
    return t.numel() - torch.count_nonzero(t)


@dataclass
class LayerCall:
    """One call of a conv/linear layer in the sampled step."""

    layer: int
    geo: Geometry
    x_mask: torch.Tensor
    w_mask: torch.Tensor | None
    need_dx: bool
    x_zeros: torch.Tensor
    x_numel: int
    out_shape: tuple[int, ...]
    dz_mask: torch.Tensor | None = None
    dz_zeros: torch.Tensor | None = None
    dz_numel: int = 0
    activation: int | None = None  # index into ProbeRecorder.act_calls


@dataclass
class ActCall:
    module: int
    zeros: torch.Tensor
    numel: int
    grad_zeros: torch.Tensor | None = None
    grad_numel: int = 0


@dataclass
class LayerStats:
    """Per-layer result of one sampled step (sums, so steps and calls merge by addition)."""

    x_zeros: float = 0.0
    x_numel: float = 0.0
    dz_zeros: float = 0.0
    dz_numel: float = 0.0
    a_zeros: float = 0.0
    a_numel: float = 0.0
    da_zeros: float = 0.0
    da_numel: float = 0.0
    macs: LayerMacs = field(default_factory=LayerMacs)

    def __add__(self, o: LayerStats) -> LayerStats:
        return LayerStats(self.x_zeros + o.x_zeros, self.x_numel + o.x_numel, self.dz_zeros + o.dz_zeros,
                          self.dz_numel + o.dz_numel, self.a_zeros + o.a_zeros, self.a_numel + o.a_numel,
                          self.da_zeros + o.da_zeros, self.da_numel + o.da_numel, self.macs + o.macs)

    def fractions(self) -> dict[str, float]:
        def frac(z, n):
            return z / n if n else float("nan")
        return {"act_in": frac(self.x_zeros, self.x_numel), "act_out": frac(self.a_zeros, self.a_numel),
                "dA": frac(self.da_zeros, self.da_numel), "dZ": frac(self.dz_zeros, self.dz_numel)}


class ProbeRecorder:
    """Attach to a model for one step: `with ProbeRecorder(layers, acts, zero_weights) as rec: step()`,
    then `rec.layer_stats()`."""

    def __init__(self, layers: list[nn.Module], activations: list[nn.Module], skip_zero_weights: bool = False):
        self.layers, self.activations = layers, activations
        self.skip_zero_weights = skip_zero_weights
        self.calls: list[LayerCall] = []
        self.act_calls: list[ActCall] = []
        self._pending: list[LayerCall] = []  # layer calls still waiting for a following activation
        self._handles = []

    def __enter__(self) -> ProbeRecorder:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._layer_hook(i)))
        for j, act in enumerate(self.activations):
            self._handles.append(act.register_forward_hook(self._act_hook(j)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _layer_hook(self, index: int):
        def hook(module, inputs, output):
            x = inputs[0]
            geo = geometry_of(module, tuple(x.shape[-2:]) if x.ndim == 4 else None,
                              tuple(output.shape[-2:]) if output.ndim == 4 else None)
            x_mask = x.detach() != 0
            w_mask = (module.weight.detach() != 0) if self.skip_zero_weights else None
            call = LayerCall(index, geo, x_mask, w_mask, x.requires_grad, _zeros(x_mask), x.numel(),
                             tuple(output.shape))
            self.calls.append(call)
            self._pending = [call]  # a new layer ends the wait of earlier ones
            if output.requires_grad:
                output.register_hook(self._grad_hook(call))
        return hook

    def _grad_hook(self, call: LayerCall):
        def hook(grad):
            call.dz_mask = grad != 0
            call.dz_zeros, call.dz_numel = _zeros(call.dz_mask), grad.numel()
        return hook

    def _act_hook(self, index: int):
        def hook(module, inputs, output):
            act = ActCall(index, _zeros(output.detach()), output.numel())
            self.act_calls.append(act)
            for call in self._pending:
                call.activation = len(self.act_calls) - 1
            self._pending = []
            if output.requires_grad:
                def grad_hook(grad):
                    act.grad_zeros, act.grad_numel = _zeros(grad), grad.numel()
                output.register_hook(grad_hook)
        return hook

    def layer_stats(self) -> list[LayerStats]:
        """Per layer (index into `layers`), summed over its calls in the step. A layer whose output
        got no gradient (unused) counts its dZ as all zeros."""
        stats = [LayerStats() for _ in self.layers]
        for call in self.calls:
            if call.dz_mask is None:  # the output took no part in the loss: no gradient arrived
                call.dz_mask = torch.zeros(call.out_shape, dtype=torch.bool, device=call.x_mask.device)
                call.dz_zeros, call.dz_numel = call.dz_mask.numel(), call.dz_mask.numel()
            out = LayerStats(float(call.x_zeros), call.x_numel, float(call.dz_zeros), call.dz_numel)
            out.macs = count_macs(call.x_mask, call.dz_mask, call.geo, need_dx=call.need_dx, w_mask=call.w_mask)
            if call.activation is not None:
                act = self.act_calls[call.activation]
                out.a_zeros, out.a_numel = float(act.zeros), act.numel
                if act.grad_zeros is not None:
                    out.da_zeros, out.da_numel = float(act.grad_zeros), act.grad_numel
            stats[call.layer] = stats[call.layer] + out
        return stats

    def activation_stats(self) -> list[dict[str, float]]:
        """Per activation module: zeros in its output A and in dL/dA (summed over calls)."""
        rows = [{"zeros": 0.0, "numel": 0.0, "grad_zeros": 0.0, "grad_numel": 0.0} for _ in self.activations]
        for act in self.act_calls:
            row = rows[act.module]
            row["zeros"] += float(act.zeros)
            row["numel"] += act.numel
            if act.grad_zeros is not None:
                row["grad_zeros"] += float(act.grad_zeros)
                row["grad_numel"] += act.grad_numel
        return rows
