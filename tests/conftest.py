"""Shared fixtures. Tests never touch the network: MNIST comes from BPSUITE_DATA (else, in this
project's CI layout, a sibling checkout `../shared/data`), CIFAR from small files written by the
tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from suite.data import DataBundle, Split
from suite.data.sources import DATASETS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("BPSUITE_OFFLINE", "1")
if os.environ.get("BPSUITE_DATA"):
    # absolute now, at import: tests change directory, and a relative root would follow them
    os.environ["BPSUITE_DATA"] = str(Path(os.environ["BPSUITE_DATA"]).expanduser().resolve())
elif DEFAULT_DATA.exists():
    os.environ["BPSUITE_DATA"] = str(DEFAULT_DATA)


@pytest.fixture
def tracker(tmp_path):
    from suite.tracking import Tracker
    return Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = Path(os.environ.get("BPSUITE_DATA", DEFAULT_DATA))
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found under {root}")
    return root


def random_bundle(n_train: int = 64, n_test: int = 32, shape=(1, 28, 28), num_classes: int = 10,
                  batch_size: int = 16, seed: int = 0, dataset: str = "mnist") -> DataBundle:
    """A DataBundle of random uint8 images: for method unit tests that need no real data."""
    gen = torch.Generator().manual_seed(seed)
    spec = DATASETS[dataset]

    def split(n):
        return Split(torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8),
                     torch.randint(0, num_classes, (n,), generator=gen))

    return DataBundle(spec, split(n_train), split(n_test), None, split(max(2, n_train // 8)), batch_size=batch_size,
                      eval_batch_size=64, augment="none", device=torch.device("cpu"), channels_last=False)


@pytest.fixture
def tiny_data() -> DataBundle:
    return random_bundle()


def make_context(data: DataBundle, epochs: int = 1, seed: int = 0):
    from suite.methods import Context
    return Context.for_data(data, epochs, seed)


@pytest.fixture
def saved(monkeypatch):
    """The figures `ctx.save_figure` saves, kept open for inspection."""
    import matplotlib.pyplot as plt

    from suite.report import context
    kept = []

    class KeepOpen:
        def __getattr__(self, name):
            return getattr(plt, name)

        @staticmethod
        def close(fig=None):
            kept.append(fig)

    monkeypatch.setattr(context, "plt", KeepOpen())
    yield kept
    for fig in kept:
        plt.close(fig)
