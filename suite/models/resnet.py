"""CIFAR-style residual networks: ResNet-20/56/110 (He et al. 2016, post-activation), ResNet-18
(the 3×3-stem CIFAR variant, as in LoCal+SGD's Cifar10-ResNet18 benchmark) and Wide ResNets
(Zagoruyko & Komodakis 2016, pre-activation). All accept any C×H×W input (e.g. 1×28×28).
"""

from __future__ import annotations

from torch import nn

from suite.models.staged import Block, StagedModel


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class BasicBlock(Block):
    """out = relu(branch(x) + shortcut(x)); the shortcut is a 1×1 conv when the shape changes."""

    residual = True

    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batchnorm)
        self.bn1 = _norm(c_out, batchnorm)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not batchnorm)
        self.bn2 = _norm(c_out, batchnorm)
        self.shape_preserving = stride == 1 and c_in == c_out
        self.shortcut = nn.Sequential() if self.shape_preserving else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=not batchnorm), _norm(c_out, batchnorm))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class PreActBlock(Block):
    """Wide-ResNet block: out = branch(x) + shortcut(x), branch = BN-ReLU-conv-BN-ReLU-conv.
    Shape-preserving ones are exactly x + branch(x): ODE form."""

    residual = True

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(c_out), nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shape_preserving = self.ode_form = stride == 1 and c_in == c_out
        self.shortcut = None if self.shape_preserving else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def branch(self, x):
        return self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x)))))))

    def forward(self, x):
        if self.shortcut is None:
            return x + self.branch(x)
        # the standard WRN shares the first BN-ReLU between branch and projection shortcut
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(pre)))))
        return out + self.shortcut(pre)


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _head(c: int, num_classes: int, pre_norm: bool = False) -> nn.Module:
    pre = [nn.BatchNorm2d(c), nn.ReLU()] if pre_norm else []
    return nn.Sequential(*pre, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def cifar_resnet(in_shape, num_classes, depth: int, widths=(16, 32, 64), batchnorm: bool = True,
                 name: str = "") -> StagedModel:
    """ResNet-(6n+2): three stages of n BasicBlocks (He et al. 2016, CIFAR)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return _resnet(in_shape, num_classes, [n] * 3, widths, batchnorm, name or f"resnet{depth}")


def resnet18(in_shape, num_classes, batchnorm: bool = True, name: str = "resnet18") -> StagedModel:
    """ResNet-18 with a 3×3 stride-1 stem and no max-pool (the usual CIFAR variant)."""
    return _resnet(in_shape, num_classes, [2, 2, 2, 2], (64, 128, 256, 512), batchnorm, name)


def _resnet(in_shape, num_classes, counts, widths, batchnorm, name) -> StagedModel:
    stem = nn.Sequential(nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=not batchnorm),
                         _norm(widths[0], batchnorm), nn.ReLU())
    blocks, c_in = [], widths[0]
    for stage, (count, c_out) in enumerate(zip(counts, widths)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(BasicBlock(c_in, c_out, stride, batchnorm))
            c_in = c_out
    model = StagedModel(stem, blocks, _head(c_in, num_classes), name=name)
    _init(model)
    if not batchnorm:  # without BN, each branch starts at zero so deep nets train (Fixup-style)
        for block in blocks:
            nn.init.zeros_(block.conv2.weight)
    return model


def wide_resnet(in_shape, num_classes, depth: int, widen: int, dropout: float = 0.0) -> StagedModel:
    """WRN-depth-widen: three stages of (depth-4)/6 pre-activation blocks."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = [16 * widen, 32 * widen, 64 * widen]
    stem = nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False)
    blocks, c_in = [], 16
    for stage, c_out in enumerate(widths):
        for i in range(n):
            blocks.append(PreActBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1, dropout))
            c_in = c_out
    model = StagedModel(stem, blocks, _head(c_in, num_classes, pre_norm=True), name=f"wrn{depth}-{widen}")
    _init(model)
    return model


