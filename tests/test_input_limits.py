"""Inputs the data cannot give: damaged dataset content and sizes beyond the data or the declared
limits. Each is a UsageError before any compute: exit status 2, the problem and its limit on
stderr, and nothing written (no mlruns.db). And the rule keeps every registered grid cell's
splits exactly as they were."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from suite.cli import main
from suite.data.pipeline import fixed_order
from suite.data.sources import load_split

RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(dims: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _mnist_like(root: Path, mnist_root: Path, **replace: bytes) -> Path:
    """An MNIST folder under `root` holding the real files (links) but for those in `replace`."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW:
        key = name.replace("-", "_")
        if key in replace:
            (raw / name).write_bytes(replace[key])
        else:
            (raw / name).symlink_to(mnist_root / "MNIST" / "raw" / name)
    return root


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, mnist_root) -> dict[str, Path]:
    """Data roots whose files have the right sizes for their headers, but the wrong content."""
    labels = bytearray((mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes())
    labels[8 + int(fixed_order(60000)[0])] = 200  # the first sample of every subset: a run would reach it
    base = tmp_path_factory.mktemp("damaged")
    return {
        "bad-labels": _mnist_like(base / "labels", mnist_root, train_labels_idx1_ubyte=bytes(labels)),
        "image-size": _mnist_like(base / "images", mnist_root,
                                  train_images_idx3_ubyte=_idx((100, 32, 32), bytes(100 * 32 * 32)),
                                  train_labels_idx1_ubyte=_idx((100,), bytes(100))),
        "count": _mnist_like(base / "count", mnist_root, train_labels_idx1_ubyte=_idx((59999,), bytes(59999))),
    }


SMOKE = ["--profile", "smoke"]
LABELS = r"train-labels-idx1-ubyte: label 200 \(training sample \d+\) is out of range; mnist has 10 classes, labels 0\.\.9"
IMAGES = r"train-images-idx3-ubyte: images are 1×32×32 .*; mnist images are C×H×W = 1×28×28"
# (argv, damaged data root or None for real MNIST, expected message)
CASES = [
    (["run", "bp", "mlp", "mnist", *SMOKE], "bad-labels", LABELS),
    (["reproduce", "launay-bottleneck", *SMOKE, "--no-report"], "bad-labels", LABELS),
    (["run", "bp", "mlp", "mnist", *SMOKE], "image-size", IMAGES),
    (["reproduce", "launay-bottleneck", *SMOKE, "--no-report"], "image-size", IMAGES),
    (["run", "bp", "mlp", "mnist", *SMOKE], "count", r"holds 60000 images but .*train-labels-idx1-ubyte holds 59999 labels"),
    (["run", "bp", "mlp", "mnist", *SMOKE, "--set", "batch_size=100000"], None,
     r"batch_size=100000 exceeds the 128 training images of train_subset=128; use at most 128"),
    (["run", "bp", "mlp", "mnist", "--set", "train_subset=100000000"], None,
     r"train_subset=100000000 exceeds the 60000 training images of mnist; use at most 60000"),
    (["run", "bp", "mlp", "mnist", "--set", "train_subset=1000000000"], None,
     r"'train_subset'=1000000000 is out of range; it must be >= 0 and <= 100000000"),
    (["run", "bp", "mlp", "mnist", *SMOKE, "--set", "probe_samples=100000"], None,
     r"probe_samples=100000 exceeds a tenth of the 128 training images of train_subset=128; use at most 12"),
    (["run", "bp", "mlp", "mnist", "--set", "train_subset=1000", "--set", "probe_samples=256"], None,
     r"probe_samples=256 exceeds a tenth of the 1000 training images .*; use at most 100"),
    (["run", "bp", "mlp", "mnist", "--set", f"epochs={10**12}"], None,
     r"'epochs'=1000000000000 is out of range; it must be >= 1 and <= 100000"),
    (["run", "bp", "mlp", "mnist", "--epochs", str(10**12)], None, r"'epochs'=1000000000000 is out of range"),
    (["run", "bp", "mlp", "mnist", "--set", "test_subset=20000"], None,
     r"test_subset=20000 exceeds the 10000 test images of mnist; use at most 10000"),
    (["run", "bp", "mlp", "mnist", "--set", "threads=100000"], None, r"'threads'=100000 is out of range.*<= 1024"),
    (["run", "bp", "mlp", "mnist", *SMOKE, "--set", "train_fraction=0.001"], None,
     r"train_fraction=0.001 of the 116 training images left after the validation/probe splits is no image; "
     r"use at least 0.00862"),
]


@pytest.mark.parametrize("argv,data,message", CASES, ids=[f"{c[0][0]}-{c[1] or c[0][-1]}" for c in CASES])
def test_impossible_input_exits_2_naming_the_limit_and_writes_nothing(argv, data, message, damaged, tmp_path,
                                                                       monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if data:
        argv = [*argv, "--data-root", str(damaged[data])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert list(work.iterdir()) == []


def test_cifar_labels_out_of_range_name_the_batch_file(tmp_path, monkeypatch):
    from suite.data import DATASETS
    from suite.errors import UsageError
    from tests.test_data import _write_cifar

    cls = DATASETS["cifar10"].tv_class
    md5 = _write_cifar(tmp_path, cls, classes=300)  # labels 0..299 in a 10-class dataset
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", dict(cls.meta, md5=md5[cls.meta["filename"]]))
    with pytest.raises(UsageError, match=r"data_batch_\d \(its sample \d\): label \d+ .* out of range; "
                                         r"cifar10 has 10 classes, labels 0\.\.9"):
        load_split(DATASETS["cifar10"], tmp_path, True)


# -- every registered grid cell keeps its splits ------------------------------------------------

SIZES = {"mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000),
         "random-imagenet": (128, 32)}


def _committed_splits(t, n: int, n_test: int) -> tuple[int, int, int, int]:
    """(train, val, probe, test) as `build_data` cut them before the size rule (commit 9bf4409)."""
    subset = min(t.train_subset, n) if t.train_subset else n
    n_val = int(round(subset * t.val_fraction))
    rest = subset - n_val
    n_probe = min(t.probe_samples, rest // 10)
    rest -= n_probe
    return max(1, int(round(rest * t.train_fraction))), n_val, n_probe, min(t.test_subset or n_test, n_test)


def _every_grid_cell():
    from suite.experiments import EXPERIMENTS
    from suite.tuning.settings import selected

    for mode in ("defaults", "tuned"):
        with selected(mode):
            for exp in EXPERIMENTS.values():
                for profile in exp.profiles:
                    yield from exp.cells(profile, 1)


def test_every_registered_grid_cell_builds_the_splits_it_built_before(mnist_root):
    from suite.config import resolve
    from suite.data import build_data, split_sizes

    cells = list(dict.fromkeys(_every_grid_cell()))
    built = {}
    for cell in cells:
        cfg = resolve(cell)  # the declared limits (`high=`) reject no cell
        if cell.dataset not in SIZES:  # added after the size rule (the class views of dfa-transfer): no splits
            continue                   # from before to keep; tests/test_dfa_transfer.py checks theirs
        requested = {k for k, _ in cell.overrides}
        expected = _committed_splits(cfg.train, *SIZES[cell.dataset])
        sizes = split_sizes(cell.dataset, cfg.train, *SIZES[cell.dataset], requested)
        assert (sizes.train, sizes.val, sizes.probe, sizes.test) == expected, cell.label
        if cell.dataset == "mnist":  # the real files: build each distinct data set once
            t = cfg.train
            key = (t.train_subset, t.val_fraction, t.probe_samples, t.train_fraction, t.test_subset, t.batch_size,
                   "probe_samples" in requested)
            if key not in built:
                data = build_data("mnist", t, torch.device("cpu"), mnist_root, requested=requested)
                built[key] = (len(data.train), len(data.val or ()), len(data.probe or ()), len(data.test))
                assert built[key] == expected, cell.label
    assert len(cells) > 500 and len(built) > 10
