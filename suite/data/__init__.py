"""Data registry: `DATASETS` (a plain dict) and `build_data` for one cell.

What is asked is what runs (`split_sizes`): a size setting may ask for at most what the data it is
drawn from holds, else the cell is a `UsageError`, raised in `prepare` before anything is computed
or logged, that names the setting, the value and the most it can be:

* `train_subset` <= the dataset's training images, `test_subset` <= its test images (0 = all);
* `batch_size` <= the training subset (`train_subset`, else the whole training split);
* `probe_samples` <= a tenth of the training subset when the cell names it (its overrides: `--set`,
  an experiment's grid); from the defaults or a profile it is a cap ("up to 256"), as before;
* `train_fraction` must leave at least one training image;
* `per_class` (a few-shot training split) needs `train_fraction` 1 and at least `per_class` images
  of every class in what the validation and probe splits leave (checked when the data is built).

The training subset is then cut in a fixed order: the validation split (`val_fraction`), the
probe split (at most a tenth of what validation leaves), then `train_fraction` of the rest, or, with
`per_class`, that many images of every class drawn from the rest by the cell's seed (so each seed
trains on its own few images; every method of a seed on the same ones). These
cuts may leave less than a cap asks for, as they always have: the probe split is capped to a tenth
of what validation leaves, and a batch bigger than the training split trains on the whole split in
every step. Where such a cap binds on a value the cell names, or on a batch size, a warning says so
on stderr (once per process) and `DataBundle.notes` holds it; the used sizes are the splits' lengths
(`train_samples` is logged with every run).
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass

import torch

from suite.data.pipeline import SUBSET_SEED, Batch, DataBundle, Split, TrainingData, fixed_order
from suite.data.sources import DATASETS, DatasetSpec, default_root, load_split
from suite.errors import UsageError

__all__ = ["DATASETS", "Batch", "DataBundle", "DatasetSpec", "Split", "SplitSizes", "TrainingData", "build_data",
           "default_root", "split_sizes"]


@dataclass(frozen=True)
class SplitSizes:
    """The sizes of one cell's splits: `subset` training images drawn (in the fixed order), cut
    into `val`, `probe` and the rest, of which `train` are trained on; `test` test images."""

    subset: int
    val: int
    probe: int
    train: int
    test: int
    notes: tuple[str, ...] = ()  # caps that bound on a value other than the default


def split_sizes(name: str, train_cfg, n_train_images: int, n_test_images: int,
                requested: Collection[str] = ()) -> SplitSizes:
    """The splits of a cell whose dataset `name` has `n_train_images` training and `n_test_images`
    test images; a size it cannot give is a UsageError (the rule: this module's docstring).
    `requested`: the settings the cell names (its overrides)."""
    t = train_cfg
    if t.train_subset > n_train_images:
        raise UsageError(f"train_subset={t.train_subset} exceeds the {n_train_images} training images of "
                         f"{name}; use at most {n_train_images} (or 0 for all of them)")
    if t.test_subset > n_test_images:
        raise UsageError(f"test_subset={t.test_subset} exceeds the {n_test_images} test images of {name}; "
                         f"use at most {n_test_images} (or 0 for all of them)")
    subset = t.train_subset or n_train_images
    source = (f"the {subset} training images of train_subset={subset}" if t.train_subset
              else f"the {subset} training images of {name}")
    if t.batch_size > subset:
        raise UsageError(f"batch_size={t.batch_size} exceeds {source}; use at most {subset}")
    probe_requested = "probe_samples" in requested
    if probe_requested and t.probe_samples > subset // 10:
        raise UsageError(f"probe_samples={t.probe_samples} exceeds a tenth of {source}; use at most "
                         f"{subset // 10} (or 0 for no probe split)")

    notes = []
    n_val = int(round(subset * t.val_fraction))
    rest = subset - n_val
    n_probe = min(t.probe_samples, rest // 10)
    if n_probe < t.probe_samples and probe_requested:
        notes.append(f"probe_samples={t.probe_samples}: the probe split holds {n_probe}, a tenth of the "
                     f"{rest} training images the validation split (val_fraction={t.val_fraction}) leaves")
    rest -= n_probe
    per_class = getattr(t, "per_class", 0)
    if per_class and t.train_fraction != 1.0:
        raise UsageError(f"per_class={per_class} draws the training split itself; it cannot be combined with "
                         f"train_fraction={t.train_fraction} (leave train_fraction at 1)")
    n_train = per_class * DATASETS[name].num_classes if per_class else int(round(rest * t.train_fraction))
    if n_train > rest:
        raise UsageError(f"per_class={per_class} asks for {n_train} training images but the validation/probe "
                         f"splits leave {rest}; use at most {rest // DATASETS[name].num_classes}")
    if n_train < 1:
        raise UsageError(f"train_fraction={t.train_fraction} of the {rest} training images left after the "
                         f"validation/probe splits is no image; use at least {1 / rest:.3g}")
    if t.batch_size > n_train:
        notes.append(f"batch_size={t.batch_size} is more than the {n_train} training images left after the "
                     f"validation/probe/train_fraction cuts: every step trains on all {n_train}")
    return SplitSizes(subset, n_val, n_probe, n_train, t.test_subset or n_test_images, tuple(notes))


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"bpsuite: warning: {message}", file=sys.stderr, flush=True)


def per_class_draw(labels: torch.Tensor, order: torch.Tensor, per_class: int, num_classes: int,
                   seed: int) -> torch.Tensor:
    """`per_class` positions of every class among `order` (positions in the training split), drawn
    by `seed` (a permutation of `order` seeded by SUBSET_SEED + seed), in `order`'s order; a class
    with fewer images is a UsageError."""
    gen = torch.Generator().manual_seed(SUBSET_SEED + seed)
    shuffled = order[torch.randperm(len(order), generator=gen)]
    picked = []
    for c in range(num_classes):
        of_class = shuffled[labels[shuffled] == c]
        if len(of_class) < per_class:
            raise UsageError(f"per_class={per_class}: class {c} has only {len(of_class)} training images left "
                             f"after the validation/probe splits; use at most {len(of_class)}")
        picked.append(of_class[:per_class])
    keep = torch.zeros(int(order.max()) + 1 if len(order) else 0, dtype=torch.bool)
    keep[torch.cat(picked)] = True
    return order[keep[order]]


def build_data(name: str, train_cfg, device: torch.device, data_root=None, *,
               requested: Collection[str] = (), seed: int = 0) -> DataBundle:
    """The cell's splits on `device`; `requested` names the settings the cell sets itself (its
    overrides), for `split_sizes`: the harness passes them, and the cell's `seed`, which draws a
    `per_class` training split."""
    spec = DATASETS[name]
    root = default_root(data_root)
    images, labels = load_split(spec, root, True)
    test_images, test_labels = load_split(spec, root, False)
    sizes = split_sizes(name, train_cfg, len(labels), len(test_labels), requested)
    order = fixed_order(len(labels))[:sizes.subset]
    val_order, order = order[len(order) - sizes.val:], order[:len(order) - sizes.val]
    val = Split(images[val_order], labels[val_order]) if sizes.val else None
    # the probe split: a fixed part of the training set, held out, for methods' diagnostics
    probe_order, order = order[len(order) - sizes.probe:], order[:len(order) - sizes.probe]
    probe = Split(images[probe_order], labels[probe_order]) if sizes.probe else None
    if getattr(train_cfg, "per_class", 0):
        order = per_class_draw(labels, order, train_cfg.per_class, spec.num_classes, seed)
    else:
        order = order[:sizes.train]
    train = Split(images[order], labels[order])

    if train_cfg.test_subset:
        test_order = fixed_order(len(test_labels))[:sizes.test]
        test_images, test_labels = test_images[test_order], test_labels[test_order]
    bundle = DataBundle(spec, train, Split(test_images, test_labels), val, probe,
                        batch_size=train_cfg.batch_size, eval_batch_size=train_cfg.eval_batch_size,
                        augment=train_cfg.augment, device=device, channels_last=train_cfg.channels_last)
    bundle.notes = sizes.notes
    for note in sizes.notes:
        _warn_once(f"{name}: {note}")
    return bundle
