"""`lenet`: BioTorch's MNIST LeNet (jsalbert/biotorch, `biotorch/models/le_net.py`, `LeNetMNIST`):
conv 5×5 with 6, 16 and 120 channels (no padding), ReLU, max-pool 2 after the first two, then
FC 84, ReLU, and the linear head. It expects 32×32 images (conv3 reduces 5×5 to 1×1).

BioTorch resizes MNIST's 28×28 images to 32×32 in its data pipeline (torchvision
`Resize((32, 32))` on the PIL image, bilinear); here the stem does it on the normalised batch
(`F.interpolate`, bilinear, half-pixel centres), so the dataset stays 28×28 for every other
model. For upsampling the two agree up to the uint8 rounding PIL applies (resizing and the
affine normalisation commute). Inputs already 32×32 (CIFAR) pass through unchanged; any
channel count is accepted (BioTorch's MNIST LeNet has 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suite.models.staged import SequentialBlock, StagedModel

SIZE = 32


class Resize(nn.Module):
    """Bilinear resize of a batch to size × size (identity when it already is)."""

    def __init__(self, size: int = SIZE):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def lenet(in_shape, num_classes: int, spec: str = "") -> StagedModel:
    if spec:
        from suite.errors import UsageError
        raise UsageError(f"lenet takes no ':{spec}' options")
    blocks = [
        SequentialBlock(nn.Conv2d(in_shape[0], 6, 5), nn.ReLU(), nn.MaxPool2d(2)),
        SequentialBlock(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
        SequentialBlock(nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten()),
        SequentialBlock(nn.Linear(120, 84), nn.ReLU()),
    ]
    return StagedModel(Resize(), blocks, nn.Linear(84, num_classes), name="lenet")
