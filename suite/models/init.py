"""Weight initialisation schemes a run can ask for (`--set init=...`).

`default` keeps each model's own initialisation (PyTorch's layer defaults, or the ResNet papers'
Kaiming init where the model sets it). `xavier` is what BioTorch's benchmark configs use for every
layer (`layer_config: {init: xavier}`): Xavier/Glorot-uniform weights on every conv and linear
layer, biases zero. Applied once after the model is built, from the cell's seeded generator
state, so every method of a cell still starts from the same weights.
"""

from __future__ import annotations

from torch import nn

INITS = ("default", "xavier")


def initialise(model: nn.Module, scheme: str) -> nn.Module:
    if scheme not in INITS:
        from suite.errors import unknown_name
        raise unknown_name("init", scheme, INITS)
    if scheme == "xavier":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return model
