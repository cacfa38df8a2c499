"""`transfer`: a frozen conv stack pretrained with BP on MNIST digits 0-4, then trainable FC layers.

The model of the `dfa-transfer` experiment (a proxy of Han & Yoo 2019's online tracker, where a
pretrained conv stack is kept and only the FC layers learn online from few samples;
docs/dfa-transfer.md). `transfer[:W1-W2-...]` (default `transfer:256-256`):

    stem   FrozenConvStack: conv 5×5 1→16, ReLU, max-pool 2, conv 5×5 16→32, ReLU, max-pool 2,
           flatten (32·4·4 = 512 features of a 28×28 image). Its weights are *buffers*, not
           parameters: no optimiser, initialisation (`init=xavier`) or method that walks
           `model.parameters()` / `model.layers()` can change them, and no gradient is computed
           for them (its input needs none, so its output needs none).
    blocks one block per hidden width: Linear, ReLU (at least two, so DFA in the FC layers
           differs from BP in more than one layer)
    head   Linear to the classes

The conv weights are the committed artefact `pretrained/mnist04-convs.pt` (67 KB), produced by
`pretrain(RECIPE)` (`python -m suite.models.transfer` rewrites it): BP on the whole training split
of digits 0-4, from a fixed seed, one thread, so the same recipe gives the same weights on the same
machine (tested). The artefact records its recipe and the recipe's hash; loading it checks that the
hash is the current recipe's, so a changed recipe cannot silently keep old weights.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from suite.errors import UsageError
from suite.models.staged import SequentialBlock, StagedModel

ARTEFACT = Path(__file__).with_name("pretrained") / "mnist04-convs.pt"
IN_SHAPE = (1, 28, 28)
CHANNELS = (16, 32)
KERNEL = 5
FEATURES = CHANNELS[1] * 4 * 4  # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4
DEFAULT_WIDTHS = (256, 256)


@dataclass(frozen=True)
class PretrainRecipe:
    """How the conv stack is pretrained: BP (Adam) on MNIST digits 0-4, a linear 5-way head on top
    of the stack, no augmentation. `images` = 0: the whole training split of digits 0-4."""
    dataset: str = "mnist-0to4"
    seed: int = 0
    epochs: int = 2
    batch_size: int = 128
    lr: float = 1e-3
    images: int = 0
    threads: int = 1
    channels: tuple[int, ...] = CHANNELS
    kernel: int = KERNEL

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


RECIPE = PretrainRecipe()


class FrozenConvStack(nn.Module):
    """conv-ReLU-pool ×2 and flatten, with fixed weights held as buffers (see the module docstring)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        for name in ("w1", "b1", "w2", "b2"):
            self.register_buffer(name, state[name].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(F.conv2d(x, self.w1, self.b1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, self.w2, self.b2)), 2)
        return h.flatten(1)


def _trainable_stack(recipe: PretrainRecipe) -> nn.Sequential:
    c1, c2 = recipe.channels
    return nn.Sequential(nn.Conv2d(1, c1, recipe.kernel), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, recipe.kernel), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())


def _normalised(spec, images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - spec.mean[0]) / spec.std[0]


def pretrain(recipe: PretrainRecipe = RECIPE, data_root=None) -> dict:
    """Train the conv stack with BP on the recipe's data; returns {"state": conv weights (w1, b1,
    w2, b2), "head": the pretraining head, "test_acc": accuracy of stack + head on the test split
    of the same classes}. Deterministic: the weights are drawn from the recipe's seed, the batches
    from a generator seeded by it, with a fixed thread count; the caller's RNG state and thread
    count are left as they were."""
    from suite.data import DATASETS, default_root, load_split

    spec = DATASETS[recipe.dataset]
    root = default_root(data_root)
    images, labels = load_split(spec, root, True)
    if recipe.images:
        images, labels = images[:recipe.images], labels[:recipe.images]
    test_images, test_labels = load_split(spec, root, False)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            stack = _trainable_stack(recipe)
            head = nn.Linear(recipe.channels[1] * 4 * 4, spec.num_classes)
        net = nn.Sequential(stack, head)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        gen = torch.Generator().manual_seed(recipe.seed)
        x_all = _normalised(spec, images)
        for _ in range(recipe.epochs):
            order = torch.randperm(len(labels), generator=gen)
            for start in range(0, len(order), recipe.batch_size):
                index = order[start:start + recipe.batch_size]
                loss = F.cross_entropy(net(x_all[index]), labels[index])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            x_test = _normalised(spec, test_images)
            correct = sum(int((net(x_test[i:i + 1000]).argmax(1) == test_labels[i:i + 1000]).sum())
                          for i in range(0, len(test_labels), 1000))
    finally:
        torch.set_num_threads(threads)
    conv1, conv2 = stack[0], stack[3]
    state = {"w1": conv1.weight, "b1": conv1.bias, "w2": conv2.weight, "b2": conv2.bias}
    return {"state": {k: v.detach().clone() for k, v in state.items()},
            "head": {k: v.detach().clone() for k, v in head.state_dict().items()},
            "test_acc": correct / len(test_labels)}


def write_artefact(path: Path = ARTEFACT, recipe: PretrainRecipe = RECIPE, data_root=None) -> dict:
    result = pretrain(recipe, data_root)
    payload = {"recipe": dataclasses.asdict(recipe), "recipe_hash": recipe.digest(), "torch": str(torch.__version__),
               **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    from suite.atomic import replacing
    with replacing(path) as tmp:
        torch.save(payload, tmp)
    return payload


@functools.lru_cache(maxsize=2)
def load_artefact(path: Path = ARTEFACT, recipe: PretrainRecipe = RECIPE) -> dict:
    """The committed pretrained weights; a UsageError if missing or made by another recipe."""
    if not path.exists():
        raise UsageError(f"the pretrained conv stack {path} is missing; write it with "
                         f"`python -m suite.models.transfer` (needs MNIST under the data root)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("recipe_hash") != recipe.digest():
        raise UsageError(f"{path} was pretrained by recipe {payload.get('recipe_hash')}, not the current "
                         f"{recipe.digest()} (suite/models/transfer.py RECIPE); rewrite it with "
                         f"`python -m suite.models.transfer`")
    return payload


def parse_transfer_spec(spec: str) -> tuple[int, ...]:
    if not spec:
        return DEFAULT_WIDTHS
    try:
        widths = tuple(int(w) for w in spec.split("-"))
    except ValueError:
        raise UsageError(f"bad transfer spec '{spec}': expected hidden FC widths like 256-256") from None
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise UsageError(f"bad transfer spec '{spec}': at least two positive hidden FC widths (e.g. 256-256)")
    return widths


def transfer(in_shape, num_classes, spec: str = "") -> StagedModel:
    """The frozen pretrained conv stack, the hidden FC blocks of `spec`, a linear head."""
    widths = parse_transfer_spec(spec)
    if tuple(in_shape) != IN_SHAPE:
        raise UsageError(f"transfer: the conv stack was pretrained on 1×28×28 MNIST images; this data is "
                         f"{'×'.join(map(str, in_shape))}")
    stem = FrozenConvStack(load_artefact()["state"])
    dims = (FEATURES, *widths)
    blocks = [SequentialBlock(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims[:-1], dims[1:])]
    return StagedModel(stem, blocks, nn.Linear(dims[-1], num_classes),
                       name="transfer" + (f":{spec}" if spec else ""))


if __name__ == "__main__":
    out = write_artefact()
    print(f"wrote {ARTEFACT} (recipe {out['recipe_hash']}): test accuracy on digits 0-4 {100 * out['test_acc']:.2f}%")
