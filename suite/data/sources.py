"""Real dataset files through torchvision's dataset classes, held as uint8 tensors.

The root is `--data-root`, else `$BPSUITE_DATA`, else `./data`. Missing files are downloaded
when a network is there (set BPSUITE_OFFLINE=1 to never try); offline and missing, or present
and damaged, is a `UsageError` that names the files.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from suite.errors import UsageError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tv_class: type
    folder: str  # the class's folder under the root, for error messages
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    natural_images: bool  # crop+flip augmentation by default (CIFAR)
    synthetic: tuple[int, int] = (0, 0)  # (train, test) sizes of seeded random images; no files


def default_root(cli_root: str | None = None) -> Path:
    """The data root as an absolute path: a relative one is taken from the working directory of
    this call (the CLI resolves it once at start-up, before anything changes directory)."""
    return Path(cli_root or os.environ.get("BPSUITE_DATA") or "./data").expanduser().resolve()


def _idx_files(spec: DatasetSpec, root: Path, train: bool) -> list[Path]:
    prefix = "train" if train else "t10k"
    raw = root / spec.folder / "raw"
    return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]


def _check_idx(path: Path) -> None:
    """An IDX file's header gives its exact size: a truncated or damaged file is named here."""
    with open(path, "rb") as fh:
        head = fh.read(4 + 4 * 4)
    if len(head) < 8 or head[0] != 0 or head[1] != 0 or len(head) < 4 + 4 * head[3]:
        raise UsageError(f"corrupted dataset file {path}: not an IDX file (bad header)")
    ndim = head[3]
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    actual = path.stat().st_size
    if actual != expected:
        raise UsageError(f"corrupted dataset file {path}: {actual} bytes, header says {expected} (truncated?)")


def _cifar_files(spec: DatasetSpec, root: Path, train: bool) -> list[tuple[Path, str]]:
    # torchvision's class checks every file of both splits and the meta file on construction
    cls = spec.tv_class
    entries = cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]
    base = root / cls.base_folder
    return [(base / name, md5) for name, md5 in entries]


def expected_files(spec: DatasetSpec, root: Path, train: bool) -> list[Path]:
    if spec.name.startswith("cifar"):
        return [p for p, _ in _cifar_files(spec, root, train)]
    return _idx_files(spec, root, train)


def _verify_present_files(spec: DatasetSpec, root: Path, train: bool) -> bool:
    """True when every file is there and intact; raise naming a damaged one; False if missing."""
    files = expected_files(spec, root, train)
    if not all(p.exists() for p in files):
        return False
    if spec.name.startswith("cifar"):
        # torchvision checks the same md5s but does not say which file failed; CIFAR files are
        # pickles, so nothing is unpickled unless its checksum matches the published one.
        for path, md5 in _cifar_files(spec, root, train):
            if hashlib.md5(path.read_bytes()).hexdigest() != md5:
                raise UsageError(f"corrupted dataset file {path}: md5 does not match torchvision's list")
    else:
        for path in files:
            _check_idx(path)
    return True


def _try_download(spec: DatasetSpec, root: Path, train: bool) -> bool:
    if os.environ.get("BPSUITE_OFFLINE"):
        return False
    try:
        spec.tv_class(str(root), train=train, download=True)
        return True
    except Exception:  # no network, mirror down: reported below with the file list
        return False


@functools.lru_cache(maxsize=8)
def load_split(spec: DatasetSpec, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 N×C×H×W and labels as int64, the whole split in memory."""
    if spec.synthetic[0]:
        return _random_split(spec, train)
    if not _verify_present_files(spec, root, train) and not _try_download(spec, root, train):
        names = "\n  ".join(str(p.resolve()) for p in expected_files(spec, root, train))
        raise UsageError(
            f"dataset '{spec.name}' not found under {root.resolve()} and it could not be downloaded "
            f"(offline?). Expected files:\n  {names}\nSet --data-root or BPSUITE_DATA to a folder "
            f"in torchvision's layout.")
    ds = spec.tv_class(str(root), train=train, download=False)
    images = torch.as_tensor(ds.data)
    if images.ndim == 3:  # MNIST-style N×H×W
        images = images.unsqueeze(1)
    else:  # CIFAR-style N×H×W×C numpy
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    return images.contiguous(), labels


def _random_split(spec: DatasetSpec, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random pixels and labels, the same on every machine (fixed seed per split)."""
    n = spec.synthetic[0 if train else 1]
    gen = torch.Generator().manual_seed(1 if train else 2)
    images = torch.randint(0, 256, (n, *spec.input_shape), generator=gen, dtype=torch.uint8)
    return images, torch.randint(0, spec.num_classes, (n,), generator=gen)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", torchvision.datasets.MNIST, "MNIST", 10, (1, 28, 28),
                         (0.1307,), (0.3081,), False),
    "fashion-mnist": DatasetSpec("fashion-mnist", torchvision.datasets.FashionMNIST, "FashionMNIST", 10,
                                 (1, 28, 28), (0.2860,), (0.3530,), False),
    "cifar10": DatasetSpec("cifar10", torchvision.datasets.CIFAR10, "cifar-10-batches-py", 10, (3, 32, 32),
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DatasetSpec("cifar100", torchvision.datasets.CIFAR100, "cifar-100-python", 100, (3, 32, 32),
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    # NOT ImageNet: random images of ImageNet's size and class count, for measurements that only
    # need ImageNet-shaped tensors (e.g. the gradient-sparsity experiment's timm models)
    "random-imagenet": DatasetSpec("random-imagenet", type(None), "(none: generated)", 1000, (3, 224, 224),
                                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False, synthetic=(128, 32)),
}
