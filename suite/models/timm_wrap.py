"""`timm:<name>` wraps any timm model as a StagedModel; `timm:<name>:<option>=<value>` passes a
build option (TIMM_OPTIONS) to `timm.create_model`, e.g. `timm:resnet50:zero_init_last=false`.

ResNet-like timm models (conv1/bn1/act1/maxpool + layer1..4) and models with a `blocks` or
`features` sequence are split into their blocks; any other model becomes one feature block,
which still satisfies the contract (methods that need finer blocks say so in `check`).
"""

from __future__ import annotations

from torch import nn

from suite.errors import UsageError
from suite.models.staged import Block, StagedModel


class CallBlock(Block):
    """Wraps a module as a block; `fn` runs it (e.g. a timm model's forward_head)."""

    def __init__(self, module: nn.Module, fn=None, residual: bool = False):
        super().__init__()
        self.inner = module
        self._fn = fn
        self.residual = residual

    def forward(self, x):
        return self._fn(self.inner, x) if self._fn else self.inner(x)


# Build options a model name may carry, with their parsers. Only those listed: a name must be
# checkable before any compute, and an arbitrary timm kwarg cannot be.
TIMM_OPTIONS = {
    # timm zero-initialises the last BatchNorm of each residual block by default (Goyal et al. 2017);
    # `false` gives the standard He initialisation of every BN (gamma = 1)
    "zero_init_last": {"true": True, "false": False},
}


def parse_timm_name(spec: str) -> tuple[str, dict]:
    """`resnet50:zero_init_last=false` -> ("resnet50", {"zero_init_last": False}); checks the
    model name and the options without building anything."""
    import timm

    name, *options = spec.split(":")
    if name not in timm.list_models():
        from suite.errors import unknown_name
        raise unknown_name("timm model", name, timm.list_models())
    kwargs = {}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in TIMM_OPTIONS or not sep:
            raise UsageError(f"bad timm option '{option}' in 'timm:{spec}': write <option>=<value> with option one "
                             f"of {', '.join(TIMM_OPTIONS)}")
        choices = TIMM_OPTIONS[key]
        if value.lower() not in choices:
            raise UsageError(f"bad value '{value}' for timm option '{key}': choose one of {', '.join(choices)}")
        kwargs[key] = choices[value.lower()]
    return name, kwargs


def _head(model):
    return CallBlock(model, lambda m, x: m.forward_head(x))


def _split(model: nn.Module):
    if all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "layer4")):  # ResNet family
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        blocks = [CallBlock(b, residual=True) for layer in ("layer1", "layer2", "layer3", "layer4")
                  for b in getattr(model, layer)]
        return stem, blocks, [model.global_pool, model.fc] if hasattr(model, "fc") else None
    return None


def build_timm(spec: str, in_shape, num_classes) -> StagedModel:
    import timm

    name, options = parse_timm_name(spec)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_shape[0], **options)
    except Exception as err:  # a timm model that cannot take this input
        raise UsageError(f"timm model '{name}' could not be built: {err}") from err
    split = _split(model)
    if split is not None:
        stem, blocks, head_parts = split
        head = nn.Sequential(*head_parts) if head_parts else _head(model)
        return StagedModel(stem, blocks, head, name=f"timm:{spec}")
    features = CallBlock(model, lambda m, x: m.forward_features(x))
    # the head shares the timm module; StagedModel.layers() deduplicates by identity below
    return _SharedTimm(features, model, name=f"timm:{spec}")


class _SharedTimm(StagedModel):
    """One feature block plus the timm head; both call into the same timm module."""

    def __init__(self, features: CallBlock, model: nn.Module, name: str):
        super().__init__(nn.Identity(), [features], nn.Identity(), name=name)
        self._timm_head_fn = model.forward_head

    def forward(self, x):
        return self._timm_head_fn(self.blocks[0](x))

    def layers(self):
        return self.blocks[0].layers()
