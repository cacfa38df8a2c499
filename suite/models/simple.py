"""Small models for MNIST-scale work: an MLP and a small conv net (Launay et al.'s CNN layout)."""

from __future__ import annotations

import math

from torch import nn

from suite.errors import UsageError
from suite.models.staged import SequentialBlock, StagedModel

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UsageError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def parse_mlp_spec(spec: str) -> tuple[tuple[int, ...], str]:
    """'800-8-800:tanh' -> ((800, 8, 800), 'tanh'). Empty spec = the default MLP."""
    widths_part, _, act = spec.partition(":")
    try:
        widths = tuple(int(w) for w in widths_part.split("-")) if widths_part else (256, 256)
    except ValueError:
        raise UsageError(f"bad mlp spec '{spec}': expected widths like 800-8-800[:tanh]") from None
    if any(w < 1 for w in widths):
        raise UsageError(f"bad mlp spec '{spec}': widths must be positive")
    return widths, act or "relu"


def mlp(in_shape, num_classes, spec: str = "") -> StagedModel:
    """Fully connected net; one block per hidden layer (linear + activation)."""
    widths, act = parse_mlp_spec(spec)
    dims = (math.prod(in_shape),) + widths
    blocks = [SequentialBlock(nn.Linear(a, b), _activation(act)) for a, b in zip(dims[:-1], dims[1:])]
    return StagedModel(nn.Flatten(), blocks, nn.Linear(dims[-1], num_classes), name=f"mlp{':' + spec if spec else ''}")


def cnn(in_shape, num_classes, spec: str = "") -> StagedModel:
    """Conv 5×5 ×{32, 64, 64} with max-pool 3/2, then FC 128 (Launay et al. 2019's CNN)."""
    act = spec or "relu"
    channels = (in_shape[0], 32, 64, 64)
    blocks, size = [], in_shape[1]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        blocks.append(SequentialBlock(nn.Conv2d(c_in, c_out, 5, padding=2), _activation(act),
                                      nn.MaxPool2d(3, 2)))
        size = (size - 3) // 2 + 1
    blocks.append(SequentialBlock(nn.Flatten(), nn.Linear(channels[-1] * size * size, 128), _activation(act)))
    return StagedModel(nn.Identity(), blocks, nn.Linear(128, num_classes), name="cnn")
