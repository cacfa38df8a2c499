"""The StagedModel contract: `stem`, `blocks` (an nn.ModuleList), `head`, and a serial forward.

Methods work on this sequence: DFA injects feedback at block or layer outputs, layer-parallel
methods cut `blocks` into stages, localized learning moves a boundary along `layers()`, sparsity
hooks every conv/linear. Each block says what it is, so a method can refuse a model it cannot
train (`check` returns a reason) instead of crashing.
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def weight_layers(module: nn.Module) -> list[nn.Module]:
    """Conv and linear layers of a module, in registration (= forward) order."""
    return [m for m in module.modules() if isinstance(m, WEIGHT_LAYERS)]


class Block(nn.Module):
    """A unit of the `blocks` sequence.

    residual:          the block has a skip connection.
    shape_preserving:  output shape == input shape.
    ode_form:          forward(x) == x + self.branch(x) exactly (a forward-Euler step with the step
                       size folded into the branch), which is what MGRIT needs.
    """

    residual: bool = False
    shape_preserving: bool = False
    ode_form: bool = False

    def layers(self) -> list[nn.Module]:
        return weight_layers(self)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not in ODE form")


class SequentialBlock(Block):
    """A plain feed-forward block (e.g. conv-act-pool or linear-act)."""

    def __init__(self, *modules: nn.Module, shape_preserving: bool = False):
        super().__init__()
        self.body = nn.Sequential(*modules)
        self.shape_preserving = shape_preserving

    def forward(self, x):
        return self.body(x)


class StagedModel(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, name: str = ""):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def layers(self) -> list[nn.Module]:
        """Every conv/linear layer, stem first, head last: the order methods index layers by."""
        return weight_layers(self.stem) + [layer for b in self.blocks for layer in weight_layers(b)] + weight_layers(self.head)

    def ode_runs(self) -> list[list[int]]:
        """Maximal runs (block indices) of consecutive ODE-form, shape-preserving blocks."""
        runs, current = [], []
        for i, block in enumerate(self.blocks):
            if getattr(block, "ode_form", False) and getattr(block, "shape_preserving", False):
                current.append(i)
            else:
                if len(current) > 1:
                    runs.append(current)
                current = []
        if len(current) > 1:
            runs.append(current)
        return runs
