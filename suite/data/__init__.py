"""Data registry: `DATASETS` (a plain dict) and `build_data` for one cell."""

from __future__ import annotations

import torch

from suite.data.pipeline import Batch, DataBundle, Split, TrainingData, fixed_order
from suite.data.sources import DATASETS, DatasetSpec, default_root, load_split

__all__ = ["DATASETS", "Batch", "DataBundle", "DatasetSpec", "Split", "TrainingData", "build_data", "default_root"]


def build_data(name: str, train_cfg, device: torch.device, data_root=None) -> DataBundle:
    spec = DATASETS[name]
    root = default_root(data_root)
    images, labels = load_split(spec, root, True)
    order = fixed_order(len(labels))
    if train_cfg.train_subset:
        order = order[:train_cfg.train_subset]
    n_val = int(round(len(order) * train_cfg.val_fraction))
    val = Split(images[order[len(order) - n_val:]], labels[order[len(order) - n_val:]]) if n_val else None
    order = order[:len(order) - n_val]
    # the probe split: a fixed part of the training set, held out, for methods' diagnostics
    n_probe = min(train_cfg.probe_samples, len(order) // 10)
    probe = Split(images[order[len(order) - n_probe:]], labels[order[len(order) - n_probe:]]) if n_probe else None
    order = order[:len(order) - n_probe]
    n_train = max(1, int(round(len(order) * train_cfg.train_fraction)))
    order = order[:n_train]
    train = Split(images[order], labels[order])

    test_images, test_labels = load_split(spec, root, False)
    if train_cfg.test_subset:
        test_order = fixed_order(len(test_labels))[:train_cfg.test_subset]
        test_images, test_labels = test_images[test_order], test_labels[test_order]
    return DataBundle(spec, train, Split(test_images, test_labels), val, probe,
                      batch_size=train_cfg.batch_size, eval_batch_size=train_cfg.eval_batch_size,
                      augment=train_cfg.augment, device=device, channels_last=train_cfg.channels_last)
