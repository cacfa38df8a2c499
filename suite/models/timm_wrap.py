"""`timm:<name>` wraps any timm model as a StagedModel.

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


def _head(model):
    return CallBlock(model, lambda m, x: m.forward_head(x))


def _split(model: nn.Module):
    if all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "layer4")):  # ResNet family
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        blocks = [CallBlock(b, residual=True) for layer in ("layer1", "layer2", "layer3", "layer4")
                  for b in getattr(model, layer)]
        return stem, blocks, [model.global_pool, model.fc] if hasattr(model, "fc") else None
    return None


def build_timm(name: str, in_shape, num_classes) -> StagedModel:
    import timm

    if name not in timm.list_models():
        from suite.errors import unknown_name
        raise unknown_name("timm model", name, timm.list_models())
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_shape[0])
    except Exception as err:  # a timm model that cannot take this input
        raise UsageError(f"timm model '{name}' could not be built: {err}") from err
    split = _split(model)
    if split is not None:
        stem, blocks, head_parts = split
        head = nn.Sequential(*head_parts) if head_parts else _head(model)
        return StagedModel(stem, blocks, head, name=f"timm:{name}")
    features = CallBlock(model, lambda m, x: m.forward_features(x))
    # the head shares the timm module; StagedModel.layers() deduplicates by identity below
    return _SharedTimm(features, model, name=f"timm:{name}")


class _SharedTimm(StagedModel):
    """One feature block plus the timm head; both call into the same timm module."""

    def __init__(self, features: CallBlock, model: nn.Module, name: str):
        super().__init__(nn.Identity(), [features], nn.Identity(), name=name)
        self._timm_head_fn = model.forward_head

    def forward(self, x):
        return self._timm_head_fn(self.blocks[0](x))

    def layers(self):
        return self.blocks[0].layers()
