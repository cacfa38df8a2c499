"""`odenet`: a residual network in exact forward-Euler form, the model of layer-parallel MGRIT.

Each block is x_{n+1} = x_n + h·ReLU(conv2(ReLU(conv1(x_n)))) with h = T/N, T = 1 — TorchBraid's
MNIST step layer (`examples/mnist`, see METHODS-BRIEF §2). No BatchNorm inside the steps, so a
step is a pure function of its input, as MGRIT assumes. Stem: 3×3 conv to `width` channels and
ReLU, then a stride-2 pool so the residual run works at half resolution (cheaper steps); head:
global average pool and linear. Spec `odenet:<depth>[-<width>][-fc]`, default `odenet:8-8`; the
`-fc` suffix swaps the head for TorchBraid's MNIST closing layer (flatten, linear to 32, ReLU,
linear; `examples/mnist/network_architecture.py::CloseLayer` [C]), which keeps the spatial layout
the pooled head throws away (odenet:16-8 on 3000 MNIST samples, 3 epochs: ≈ 25% test accuracy
with the pooled head, ≈ 89% with `-fc`).
"""

from __future__ import annotations

from torch import nn

from suite.errors import UsageError
from suite.models.staged import Block, StagedModel


class EulerStep(Block):
    residual = shape_preserving = ode_form = True

    def __init__(self, width: int, h: float):
        super().__init__()
        self.h = h
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.ReLU()

    def branch(self, x):
        return self.h * self.act(self.conv2(self.act(self.conv1(x))))

    def forward(self, x):
        return x + self.branch(x)


def parse_odenet_spec(spec: str) -> tuple[int, int, bool]:
    """(depth, width, fc head) from `<depth>[-<width>][-fc]`."""
    spec = spec or "8-8"
    fc = spec.endswith("-fc")
    depth_part, _, width_part = spec.removesuffix("-fc").partition("-")
    try:
        depth, width = int(depth_part), int(width_part or 8)
    except ValueError:
        raise UsageError(f"bad odenet spec '{spec}': expected <depth>[-<width>][-fc], e.g. odenet:16-8") from None
    if depth < 1 or width < 1:
        raise UsageError(f"bad odenet spec '{spec}': depth and width must be positive")
    return depth, width, fc


def odenet(in_shape, num_classes, spec: str = "", horizon: float = 1.0) -> StagedModel:
    depth, width, fc = parse_odenet_spec(spec)
    stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
    blocks = [EulerStep(width, horizon / depth) for _ in range(depth)]
    if fc:  # TorchBraid's CloseLayer, on the stem's half-resolution map
        features = width * (in_shape[1] // 2) * (in_shape[2] // 2)
        head = nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, num_classes))
    else:
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    return StagedModel(stem, blocks, head, name=f"odenet{':' + spec if spec else ''}")
