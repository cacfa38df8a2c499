"""Real dataset files through torchvision's dataset classes, held as uint8 tensors.

The root is `--data-root`, else `$BPSUITE_DATA`, else `./data`. Missing files are downloaded
when a network is there (set BPSUITE_OFFLINE=1 to never try); offline and missing, or present
and damaged, is a `UsageError` that names the files. A split is checked when it is loaded: file
sizes against their headers (IDX) or checksums (CIFAR), then the content against the dataset's
spec: images C×H×W = `input_shape`, as many labels as images, every label in 0..num_classes-1.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
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
    # a class view of another dataset: only the images of `classes` of `view_of`'s files, their
    # labels renumbered 0..len(classes)-1 in that order (e.g. MNIST's digits 5-9 as classes 0-4)
    view_of: str = ""
    classes: tuple[int, ...] = ()


def default_root(cli_root: str | None = None) -> Path:
    """The data root as an absolute path: a relative one is taken from the working directory of
    this call (the CLI resolves it once at start-up, before anything changes directory)."""
    return Path(cli_root or os.environ.get("BPSUITE_DATA") or "./data").expanduser().resolve()


def _idx_files(spec: DatasetSpec, root: Path, train: bool) -> list[Path]:
    prefix = "train" if train else "t10k"
    raw = root / spec.folder / "raw"
    return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]


def _idx_header(path: Path) -> tuple[int, list[int]]:
    """An IDX file's (type code, dims); a file too short for its header is named."""
    with open(path, "rb") as fh:
        head = fh.read(4 + 4 * 4)
    if len(head) < 8 or head[0] != 0 or head[1] != 0 or len(head) < 4 + 4 * head[3]:
        raise UsageError(f"corrupted dataset file {path}: not an IDX file (bad header)")
    ndim = head[3]
    return head[2], [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]


def _check_idx(path: Path) -> None:
    """An IDX file's header gives its exact size: a truncated or damaged file is named here."""
    code, dims = _idx_header(path)
    if code != 0x08:
        raise UsageError(f"corrupted dataset file {path}: IDX type code 0x{code:02x}; MNIST-format files "
                         f"hold unsigned bytes (0x08)")
    expected = 4 + 4 * len(dims) + int(torch.tensor(dims).prod())
    actual = path.stat().st_size
    if actual != expected:
        raise UsageError(f"corrupted dataset file {path}: {actual} bytes, header says {expected} (truncated?)")


def _check_idx_shapes(spec: DatasetSpec, root: Path, train: bool) -> None:
    """Images N×H×W with 1×H×W = the spec's input shape, N labels: read from the headers, before
    torchvision reads the files."""
    image_file, label_file = _idx_files(spec, root, train)
    _, image_dims = _idx_header(image_file)
    _, label_dims = _idx_header(label_file)
    want = "×".join(map(str, spec.input_shape))
    if len(image_dims) != 3 or (1, *image_dims[1:]) != spec.input_shape:
        got = "×".join(map(str, [1, *image_dims[1:]] if len(image_dims) == 3 else image_dims[1:]))
        raise UsageError(f"bad dataset file {image_file}: images are {got} (header dims "
                         f"{'×'.join(map(str, image_dims))}); {spec.name} images are C×H×W = {want}")
    if len(label_dims) != 1:
        raise UsageError(f"bad dataset file {label_file}: labels have {len(label_dims)} dimensions "
                         f"({'×'.join(map(str, label_dims))}); a label file holds one label per image")
    if label_dims[0] != image_dims[0]:
        raise UsageError(f"bad dataset files: {image_file} holds {image_dims[0]} images but {label_file} "
                         f"holds {label_dims[0]} labels; they must match")


def _check_content(spec: DatasetSpec, root: Path, train: bool, images: torch.Tensor,
                   labels: torch.Tensor) -> None:
    """Shape and labels of a loaded split against its spec; the error names the file and the value."""
    split = "training" if train else "test"
    where = (_idx_files(spec, root, train)[0] if not spec.name.startswith("cifar")
             else f"the {split} files under {root / spec.tv_class.base_folder}")
    want = "×".join(map(str, spec.input_shape))
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.input_shape:
        raise UsageError(f"bad dataset file(s) {where}: {split} images are "
                         f"{'×'.join(map(str, images.shape[1:]))}; {spec.name} images are C×H×W = {want}")
    if len(images) == 0:
        raise UsageError(f"bad dataset file(s) {where}: the {split} split of {spec.name} holds no images")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UsageError(f"bad dataset file(s) {where}: {len(images)} {split} images but "
                         f"{labels.numel()} labels; they must match")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= spec.num_classes:
        bad = low if low < 0 else high
        index = int((labels == bad).nonzero()[0])
        label_file = (_idx_files(spec, root, train)[1] if not spec.name.startswith("cifar")
                      else _cifar_file_of(spec, root, train, index))
        raise UsageError(f"bad dataset file {label_file}: label {bad} ({split} sample {index}) is out of "
                         f"range; {spec.name} has {spec.num_classes} classes, labels 0..{spec.num_classes - 1}")


def _cifar_file_of(spec: DatasetSpec, root: Path, train: bool, index: int) -> str:
    """The CIFAR batch file that holds sample `index` of a split (for an error message only)."""
    cls = spec.tv_class
    base = root / cls.base_folder
    start = 0
    for name, _ in (cls.train_list if train else cls.test_list):
        try:  # these files passed their checksums already
            with open(base / name, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            count = len(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except Exception:
            break
        if index < start + count:
            return f"{base / name} (its sample {index - start})"
        start += count
    return f"under {base}"


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
    """Images as uint8 N×C×H×W and labels as int64, the whole split in memory, checked against the
    spec (shape, label range: `_check_content`); a bad file is a UsageError naming it."""
    if spec.synthetic[0]:
        return _random_split(spec, train)
    if spec.view_of:
        return _class_view(spec, *load_split(DATASETS[spec.view_of], root, train))
    if not _verify_present_files(spec, root, train) and not _try_download(spec, root, train):
        names = "\n  ".join(str(p.resolve()) for p in expected_files(spec, root, train))
        raise UsageError(
            f"dataset '{spec.name}' not found under {root.resolve()} and it could not be downloaded "
            f"(offline?). Expected files:\n  {names}\nSet --data-root or BPSUITE_DATA to a folder "
            f"in torchvision's layout.")
    if not spec.name.startswith("cifar"):
        _check_idx_shapes(spec, root, train)
    try:
        ds = spec.tv_class(str(root), train=train, download=False)
    except (ValueError, KeyError, TypeError, IndexError, pickle.UnpicklingError, EOFError) as err:
        names = ", ".join(str(p) for p in expected_files(spec, root, train))
        raise UsageError(f"bad dataset files of {spec.name} ({names}): torchvision could not read them: "
                         f"{type(err).__name__}: {err}") from None
    images = torch.as_tensor(ds.data)
    if images.ndim == 3:  # MNIST-style N×H×W
        images = images.unsqueeze(1)
    else:  # CIFAR-style N×H×W×C numpy
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    _check_content(spec, root, train, images, labels)
    return images.contiguous(), labels


def _class_view(spec: DatasetSpec, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of `spec.classes`, in the files' order, labelled by their place in `spec.classes`."""
    renumber = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    renumber[torch.tensor(spec.classes)] = torch.arange(len(spec.classes))
    keep = renumber[labels] >= 0
    return images[keep].contiguous(), renumber[labels[keep]]


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
    # class views of MNIST for the transfer study (suite/experiments/dfa_transfer.py): a conv stack
    # pretrained on digits 0-4, FC layers trained on few images of digits 5-9
    "mnist-0to4": DatasetSpec("mnist-0to4", torchvision.datasets.MNIST, "MNIST", 5, (1, 28, 28),
                              (0.1307,), (0.3081,), False, view_of="mnist", classes=(0, 1, 2, 3, 4)),
    "mnist-5to9": DatasetSpec("mnist-5to9", torchvision.datasets.MNIST, "MNIST", 5, (1, 28, 28),
                              (0.1307,), (0.3081,), False, view_of="mnist", classes=(5, 6, 7, 8, 9)),
    # NOT ImageNet: random images of ImageNet's size and class count, for measurements that only
    # need ImageNet-shaped tensors (e.g. the gradient-sparsity experiment's timm models)
    "random-imagenet": DatasetSpec("random-imagenet", type(None), "(none: generated)", 1000, (3, 224, 224),
                                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False, synthetic=(128, 32)),
}
