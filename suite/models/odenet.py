"""`odenet`: a residual network in exact forward-Euler form, the model of layer-parallel MGRIT.

Each block is x_{n+1} = x_n + h·ReLU(conv2(ReLU(conv1(x_n)))) with h = T/N, T = 1 — TorchBraid's
MNIST step layer (github.com/Multilevel-NN/torchbraid, `examples/mnist/network_architecture.py`,
`StepLayer`, applied with step dt = T/N). No BatchNorm inside the steps, so a step is a pure
function of its input, as MGRIT assumes. Spec `odenet:<depth>[-<width>][-fc|-tb]`, default
`odenet:8-8`:

* default: stem = 3×3 conv to `width` channels and ReLU, then a stride-2 pool so the residual run
  works at half resolution (cheaper steps); head = global average pool and linear.
* `-fc`: the same stem, and TorchBraid's closing layer as the head (flatten, linear to 32, ReLU,
  linear: `CloseLayer`), which keeps the spatial layout the pooled head throws away (odenet:16-8
  on 3000 MNIST samples, 3 epochs: ≈ 25% test accuracy with the pooled head, ≈ 89% with `-fc`).
* `-tb`: TorchBraid's MNIST network as its example builds it: no trained stem (`OpenFlatLayer`
  repeats the image over the `width` channels), the steps at full resolution, and `CloseLayer`.
  (Its `CloseLayer` ends in log_softmax; cross-entropy on log-probabilities equals cross-entropy
  on the logits, so the head here stops at the logits.)
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


class RepeatChannels(nn.Module):
    """TorchBraid's `OpenFlatLayer`: the input repeated `channels` times along the channels (no parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x.repeat(1, self.channels, 1, 1)


def parse_odenet_spec(spec: str) -> tuple[int, int, str]:
    """(depth, width, variant) from `<depth>[-<width>][-fc|-tb]`; variant "", "fc" or "tb"."""
    spec = spec or "8-8"
    variant = next((v for v in ("fc", "tb") if spec.endswith(f"-{v}")), "")
    depth_part, _, width_part = spec.removesuffix(f"-{variant}").partition("-")
    try:
        depth, width = int(depth_part), int(width_part or 8)
    except ValueError:
        raise UsageError(f"bad odenet spec '{spec}': expected <depth>[-<width>][-fc|-tb], e.g. odenet:16-8") from None
    if depth < 1 or width < 1:
        raise UsageError(f"bad odenet spec '{spec}': depth and width must be positive")
    return depth, width, variant


def close_layer(features: int, num_classes: int) -> nn.Module:
    """TorchBraid's `CloseLayer`: flatten, linear to 32, ReLU, linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, num_classes))


def odenet(in_shape, num_classes, spec: str = "", horizon: float = 1.0) -> StagedModel:
    depth, width, variant = parse_odenet_spec(spec)
    blocks = [EulerStep(width, horizon / depth) for _ in range(depth)]
    if variant == "tb":  # TorchBraid's example network: repeated image, full resolution
        stem = RepeatChannels(width)
        head = close_layer(width * in_shape[1] * in_shape[2], num_classes)
        return StagedModel(stem, blocks, head, name=f"odenet:{spec}")
    stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
    if variant == "fc":  # TorchBraid's CloseLayer, on the stem's half-resolution map
        head = close_layer(width * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes)
    else:
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    return StagedModel(stem, blocks, head, name=f"odenet{':' + spec if spec else ''}")
