"""Model registry: `MODELS` maps a family name to a builder `(in_shape, num_classes, spec) -> StagedModel`.

Names: a registered key (`resnet20`), a key with a spec after a colon (`mlp:800-8-800:tanh`,
`cnn:tanh`, `bottleneck:28`), or `timm:<name>` for any timm model (with build options:
`timm:resnet50:zero_init_last=false`; suite/models/timm_wrap.py).
"""

from __future__ import annotations

from collections.abc import Callable

from suite.errors import UsageError, unknown_name
from suite.models import bottleneck, lenet, odenet, resnet, simple, transfer
from suite.models.staged import Block, SequentialBlock, StagedModel, weight_layers

__all__ = ["MODELS", "Block", "SequentialBlock", "StagedModel", "build_model", "check_model_name", "weight_layers"]


def _no_spec(builder: Callable) -> Callable:
    def build(in_shape, num_classes, spec: str = ""):
        if spec:
            raise UsageError(f"this model takes no ':{spec}' options")
        return builder(in_shape, num_classes)
    return build


MODELS: dict[str, Callable[..., StagedModel]] = {
    "mlp": simple.mlp,
    "odenet": odenet.odenet,
    "cnn": simple.cnn,
    "lenet": lenet.lenet,  # BioTorch's LeNetMNIST; 28×28 inputs resized to 32×32 in the stem
    "bottleneck": bottleneck.bottleneck,  # Launay et al.'s gradient-masked 800-800-800 tanh MLP; spec: k
    "resnet20": _no_spec(lambda s, k: resnet.cifar_resnet(s, k, 20)),
    "resnet56": _no_spec(lambda s, k: resnet.cifar_resnet(s, k, 56)),
    "resnet110": _no_spec(lambda s, k: resnet.cifar_resnet(s, k, 110)),
    "resnet18": _no_spec(lambda s, k: resnet.resnet18(s, k)),
    "resnet20-nobn": _no_spec(lambda s, k: resnet.cifar_resnet(s, k, 20, batchnorm=False, name="resnet20-nobn")),
    "resnet18-nobn": _no_spec(lambda s, k: resnet.resnet18(s, k, batchnorm=False, name="resnet18-nobn")),
    "wrn16-4": _no_spec(lambda s, k: resnet.wide_resnet(s, k, 16, 4)),
    "wrn28-10": _no_spec(lambda s, k: resnet.wide_resnet(s, k, 28, 10)),
    "transfer": transfer.transfer,  # frozen conv stack pretrained on MNIST digits 0-4 + FC layers; spec: widths
}

TIMM_PREFIX = "timm:"


def check_model_name(name: str) -> None:
    """Validate a model name without building it (cheap; used before any compute)."""
    if name.startswith(TIMM_PREFIX):
        from suite.models.timm_wrap import parse_timm_name
        parse_timm_name(name[len(TIMM_PREFIX):])
        return
    family, _, spec = name.partition(":")
    if family not in MODELS:
        raise unknown_name("model", name, list(MODELS) + ["timm:<name>"])
    if family == "mlp" and spec:
        simple.parse_mlp_spec(spec)
    elif family == "bottleneck":
        bottleneck.parse_bottleneck_spec(spec)
    elif family == "odenet":
        odenet.parse_odenet_spec(spec)
    elif family == "cnn" and spec and spec not in simple.ACTIVATIONS:
        raise UsageError(f"bad cnn spec '{spec}': choose an activation: {', '.join(simple.ACTIVATIONS)}")


def build_model(name: str, in_shape, num_classes: int) -> StagedModel:
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        from suite.models.timm_wrap import build_timm
        return build_timm(name[len(TIMM_PREFIX):], in_shape, num_classes)
    family, _, spec = name.partition(":")
    return MODELS[family](tuple(in_shape), num_classes, spec)
