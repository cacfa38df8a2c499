"""Batches as tensor ops: index, normalise and augment whole batches, seeded and deterministic.

The data order and the augmentation of epoch e depend only on (seed, e), so every method of a
cell sees exactly the same batches. Batches carry the sample indices (positions in the training
split), which auxiliary-variable methods use to address per-sample state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Subsets are drawn from one fixed permutation, independent of the run seed, so that every
# seed and every method trains on the same samples.
SUBSET_SEED = 20240917


@dataclass
class Batch:
    x: torch.Tensor  # float, normalised (and augmented for training batches)
    y: torch.Tensor  # int64 labels
    index: torch.Tensor  # int64 positions in the training split

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass
class Split:
    images: torch.Tensor  # uint8 N×C×H×W
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


def fixed_order(n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))


def random_crop(images: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad` and crop back to H×W at a random offset per sample (uint8 in, uint8 out)."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).to(images.device)
    rows = (off[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (off[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class TrainingData:
    """What a method may see of a dataset: the training split, the validation split (when there is
    one) and the probe split (a fixed set held out of the training data for diagnostics such as
    alignment or residual probes), on the device, with their batching. It holds no reference to
    the test split, which belongs to the harness's evaluation (`DataBundle`)."""

    def __init__(self, spec, train: Split, val: Split | None, probe: Split | None, *, batch_size: int,
                 eval_batch_size: int, augment: str, device: torch.device, channels_last: bool):
        self.spec = spec
        self.device = device
        self.train = self._to(train)
        self.val = self._to(val) if val is not None else None
        self.probe = self._to(probe) if probe is not None else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = ("crop-flip" if spec.natural_images else "none") if augment == "auto" else augment
        self.channels_last = channels_last
        mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        # x_norm = (x/255 - mean)/std = x*scale - shift, one fused multiply-add per batch
        self._scale, self._shift = 1.0 / (255.0 * std), mean / std

    def _batching(self) -> dict:
        return {"batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                "augment": self.augment, "device": self.device, "channels_last": self.channels_last}

    def _to(self, split: Split) -> Split:
        return Split(split.images.to(self.device), split.labels.to(self.device))

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.batch_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(-self._shift, images.float(), self._scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def epoch_generator(self, seed: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 100003 + epoch)

    def train_batches(self, seed: int, epoch: int) -> Iterator[Batch]:
        """The deterministic, augmented training batches of one epoch (last batch may be short)."""
        gen = self.epoch_generator(seed, epoch)
        order = torch.randperm(len(self.train), generator=gen).to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield Batch(self.fetch(index, augment=True, gen=gen), self.train.labels[index], index)

    def fetch(self, index: torch.Tensor, augment: bool = False, gen: torch.Generator | None = None) -> torch.Tensor:
        """Training images by index, normalised; un-augmented unless asked (aux-variable methods)."""
        images = self.train.images[index]
        if augment and self.augment != "none":
            gen = gen or torch.Generator().manual_seed(0)
            images = random_crop(images, 4, gen)
            if self.augment == "crop-flip":
                images = random_flip(images, gen)
        return self.normalise(images)

    def splits(self) -> dict[str, Split | None]:
        return {"train": self.train, "val": self.val, "probe": self.probe}

    def eval_batches(self, split: str) -> Iterator[Batch]:
        """Un-augmented batches of a split, in order (nothing when the split is absent)."""
        splits = self.splits()
        if split not in splits:
            raise KeyError(f"split '{split}' is not available here; choose one of {', '.join(splits)}")
        data = splits[split]
        if data is None:
            return
        for start in range(0, len(data), self.eval_batch_size):
            index = torch.arange(start, min(start + self.eval_batch_size, len(data)), device=self.device)
            yield Batch(self.normalise(data.images[index]), data.labels[index], index)


class DataBundle(TrainingData):
    """Everything a cell needs from a dataset: the training view plus the test split, which only
    the harness reads. Methods get `training_view()`."""

    notes: tuple[str, ...] = ()  # caps of the size settings that bound (`suite.data.split_sizes`)

    def __init__(self, spec, train: Split, test: Split, val: Split | None, probe: Split | None = None,
                 **batching):
        super().__init__(spec, train, val, probe, **batching)
        self.test = self._to(test)

    def splits(self) -> dict[str, Split | None]:
        return super().splits() | {"test": self.test}

    def training_view(self) -> TrainingData:
        """The same tensors (no copy) without the test split."""
        return TrainingData(self.spec, self.train, self.val, self.probe, **self._batching())
