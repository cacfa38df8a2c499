"""Data registry: real MNIST, CIFAR-format files written here, errors that name files, and the
batch pipeline's determinism, indices and augmentation."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision

from suite.config import TrainConfig
from suite.data import DATASETS, build_data
from suite.data.pipeline import random_crop, random_flip
from suite.data.sources import load_split
from suite.errors import UsageError
from tests.conftest import random_bundle


def test_real_mnist_loads_as_uint8(mnist_root):
    images, labels = load_split(DATASETS["mnist"], mnist_root, True)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and set(labels.unique().tolist()) == set(range(10))
    test_images, _ = load_split(DATASETS["mnist"], mnist_root, False)
    assert test_images.shape == (10000, 1, 28, 28)


def test_subsets_and_validation_split_are_disjoint(mnist_root):
    cfg = TrainConfig(train_subset=1000, test_subset=200, val_fraction=0.2, batch_size=100)
    data = build_data("mnist", cfg, torch.device("cpu"), mnist_root)
    # 1000 = 200 validation + 80 probe (a tenth of the rest; the default asks for 256) + 720 training
    assert len(data.train) == 720 and len(data.val) == 200 and len(data.probe) == 80 and len(data.test) == 200
    train_set = {bytes(x.numpy()) for x in data.train.images}
    assert not train_set & {bytes(x.numpy()) for x in data.val.images}
    assert not train_set & {bytes(x.numpy()) for x in data.probe.images}


def test_batches_are_deterministic_and_carry_indices():
    data = random_bundle(n_train=50, batch_size=16)
    a, b = list(data.train_batches(3, 1)), list(data.train_batches(3, 1))
    assert [len(x) for x in a] == [16, 16, 16, 2]
    for x, y in zip(a, b):
        assert torch.equal(x.x, y.x) and torch.equal(x.index, y.index)
    other_epoch = list(data.train_batches(3, 2))
    assert not torch.equal(a[0].index, other_epoch[0].index)
    seen = torch.cat([batch.index for batch in a])
    assert sorted(seen.tolist()) == list(range(50))
    batch = a[0]  # un-augmented here, so the batch is exactly the normalised images at its indices
    assert torch.equal(batch.x, data.normalise(data.train.images[batch.index]))
    assert torch.equal(batch.y, data.train.labels[batch.index])


def test_normalisation_matches_torchvision():
    data = random_bundle(n_train=4, shape=(3, 32, 32), dataset="cifar10")
    images = data.train.images
    expected = torchvision.transforms.Normalize(DATASETS["cifar10"].mean, DATASETS["cifar10"].std)(images.float() / 255)
    torch.testing.assert_close(data.normalise(images), expected)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    cropped = random_crop(images, 2, gen)
    off = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        r, c = off[0, i], off[1, i]
        assert torch.equal(cropped[i], padded[i, :, r:r + 6, c:c + 6])


def test_random_flip_flips_some_and_only_horizontally():
    images = torch.arange(64 * 3 * 4, dtype=torch.uint8).view(64, 1, 3, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(1))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64


def _write_cifar(root, cls, n_per_file=6, label_key="labels", classes=10):
    """CIFAR files in torchvision's pickle format, small; returns the md5 lists to install."""
    base = root / cls.base_folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name, _ in cls.train_list + cls.test_list:
        entry = {"data": rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n_per_file).tolist()}
        (base / name).write_bytes(pickle.dumps(entry))
        md5[name] = hashlib.md5((base / name).read_bytes()).hexdigest()
    meta_key = cls.meta["key"]
    (base / cls.meta["filename"]).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]}))
    md5[cls.meta["filename"]] = hashlib.md5((base / cls.meta["filename"]).read_bytes()).hexdigest()
    return md5


@pytest.mark.parametrize("name,label_key,classes", [("cifar10", "labels", 10), ("cifar100", "fine_labels", 100)])
def test_cifar_through_torchvision_on_files_written_here(tmp_path, monkeypatch, name, label_key, classes):
    cls = DATASETS[name].tv_class
    md5 = _write_cifar(tmp_path, cls, label_key=label_key, classes=classes)
    # the real torchvision class checks the published md5s; point it at the files written here
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=md5[cls.meta["filename"]]))
    load_split.cache_clear()
    images, labels = load_split(DATASETS[name], tmp_path, True)
    assert images.shape == (6 * len(cls.train_list), 3, 32, 32) and images.dtype == torch.uint8
    assert int(labels.max()) < classes
    data = build_data(name, TrainConfig(batch_size=4), torch.device("cpu"), tmp_path)
    assert data.augment == "crop-flip"
    batch = next(data.train_batches(0, 0))
    assert batch.x.shape == (4, 3, 32, 32) and batch.x.dtype == torch.float32

    # a damaged file is named
    victim = tmp_path / cls.base_folder / cls.train_list[0][0]
    victim.write_bytes(victim.read_bytes()[:-10])
    load_split.cache_clear()
    with pytest.raises(UsageError, match=cls.train_list[0][0]):
        load_split(DATASETS[name], tmp_path, True)


def test_missing_offline_names_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("BPSUITE_OFFLINE", "1")
    load_split.cache_clear()
    with pytest.raises(UsageError, match=r"train-images-idx3-ubyte"):
        load_split(DATASETS["mnist"], tmp_path, True)
    with pytest.raises(UsageError, match=r"data_batch_1"):
        load_split(DATASETS["cifar10"], tmp_path, True)


def test_truncated_mnist_file_is_named(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes((mnist_root / "MNIST" / "raw" / name).read_bytes())
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:100000])
    load_split.cache_clear()
    with pytest.raises(UsageError, match="train-images-idx3-ubyte.*truncated"):
        load_split(DATASETS["mnist"], tmp_path, True)
