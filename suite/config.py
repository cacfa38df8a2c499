"""Run configuration: defaults, then the profile, then experiment and `--set` overrides.

A *cell* is method × model × dataset × seed × profile (+ overrides). `resolve` turns a cell into
a frozen `RunConfig` whose `cell_hash` identifies it in MLflow: the hash covers every resolved
value, so a changed default is a new cell, never a silent reuse of an old result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from suite.errors import UsageError, lookup
from suite.params import apply_overrides, hashed_fields, keys_of, param

# Upper bounds of the run settings, far above any real budget, so that a mistyped value is an
# error before a run starts. Sizes are also checked against the dataset (`suite.data.split_sizes`:
# a size setting may ask for at most what the data it is drawn from holds).
MAX_EPOCHS = 100_000
MAX_SAMPLES = 100_000_000  # samples of a split or a batch; ImageNet's training set has 1.28M
MAX_STEPS = 100_000_000
MAX_THREADS = 1024


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = param(3, "training epochs", low=1, high=MAX_EPOCHS)
    batch_size: int = param(128, "training batch size: at most the training subset (train_subset, else "
                            "the whole training split); a batch bigger than the training split left "
                            "after the validation/probe/train_fraction cuts trains on all of it in "
                            "every step, with a warning", low=1, high=MAX_SAMPLES)
    eval_batch_size: int = param(1000, "batch size for evaluation (off the clock)", low=1, high=MAX_SAMPLES)
    train_subset: int = param(0, "use the first N training samples of a fixed permutation, at most the "
                              "dataset's training images; 0 = all", low=0, high=MAX_SAMPLES)
    train_fraction: float = param(1.0, "fraction of the (subset) training set left after the validation "
                                  "and probe splits, for small-data studies; it must keep at least one "
                                  "image", low=0.0, low_open=True, high=1.0)
    per_class: int = param(0, "few-shot training split: N training images of every class, drawn by the cell's "
                           "seed from the images the validation and probe splits leave (with train_fraction "
                           "1); 0 = all of them", low=0, high=MAX_SAMPLES, hash_default=False)
    test_subset: int = param(0, "evaluate on the first N test samples, at most the dataset's test "
                             "images; 0 = all", low=0, high=MAX_SAMPLES)
    val_fraction: float = param(0.0, "hold out this fraction of the training set as validation", low=0.0, high=0.5)
    augment: str = param("auto", "batch augmentation; auto = crop+flip for CIFAR, none otherwise",
                         choices=("auto", "none", "crop", "crop-flip"))
    channels_last: bool = param(True, "channels_last memory format for 4-D inputs (faster convs on CPU)")
    device: str = param("auto", "auto = cuda when available", choices=("auto", "cpu", "cuda"))
    check_every: int = param(25, "steps per divergence check (one sync per window, not per step)", low=1,
                             high=MAX_STEPS)
    diverge_factor: float = param(10.0, "a run is `diverged` when a check window's mean training loss "
                                  "exceeds this multiple of the first window's mean (or any loss is "
                                  "non-finite); 0 = only non-finite losses", low=0.0)
    threads: int = param(1, "intra-op CPU threads of the run, fixed for its whole life (accuracy "
                         "depends on it: reductions are summed in a thread-count-dependent order)", low=1,
                         high=MAX_THREADS)
    probe_samples: int = param(256, "training samples held out as the probe split for methods' "
                               "diagnostics, at most a tenth of the training images the validation split "
                               "leaves: from the defaults or a profile it means up to N (256: a smaller "
                               "training set gets a tenth); set by the cell (--set, an experiment's "
                               "grid) it must be at most a tenth of the training subset, else an error "
                               "(a validation split may then leave room for fewer, with a warning). "
                               "0 = no probe split", low=0, high=MAX_SAMPLES)
    init: str = param("default", "weight initialisation: the model's own (default) or Xavier-uniform "
                      "weights and zero biases on every conv/linear layer (BioTorch's configs)",
                      choices=("default", "xavier"))
    eval_test: bool = param(True, "evaluate the test split after every epoch; tuning trials set it "
                            "false, so that a study never reads the test split")
    measure_flops: bool = param(True, "count FLOPs of one training step (off the clock)")
    save_checkpoint: bool = param(False, "log the final weights (a state dict, model.pt) with the run")


# Values each profile sets on top of the TrainConfig defaults. `smoke`: every cell in seconds;
# `quick`: real MNIST, small models, minutes on 2 CPU cores; `verify`: real MNIST at a budget that
# decides each claim (full training set, epochs until BP has converged, ≥ 3 seeds; hours on 2 CPU
# cores); `paper`: the papers' settings (CIFAR, full epochs; a GPU is expected).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 1, "batch_size": 32, "train_subset": 128, "test_subset": 128,
              "eval_batch_size": 128, "measure_flops": False, "probe_samples": 12},
    "quick": {"epochs": 3, "batch_size": 128, "train_subset": 6000, "test_subset": 2000},
    "verify": {"epochs": 10, "batch_size": 128},
    "paper": {"epochs": 164, "batch_size": 128},
}


@dataclass(frozen=True, order=True)
class Cell:
    """One point of an experiment grid, before resolution."""

    method: str
    model: str
    dataset: str
    seed: int = 0
    profile: str = "quick"
    overrides: tuple[tuple[str, str], ...] = ()

    def with_overrides(self, **kv: Any) -> Cell:
        merged = dict(self.overrides) | {k: str(v) for k, v in kv.items()}
        return dataclasses.replace(self, overrides=tuple(sorted(merged.items())))

    def run_name(self, limit: int = 60) -> str:
        """The MLflow run name: `method/model/dataset/sN[settings]`, floats rounded to 3 digits and
        cut to `limit` characters (the exact settings are the run's params and its `cell_label`)."""
        def short(value: str) -> str:
            try:
                number = float(value)
            except ValueError:
                return value
            return value if number.is_integer() or "e" in value.lower() and len(value) < 8 else f"{number:.3g}"

        name = f"{self.method}/{self.model}/{self.dataset}/s{self.seed}"
        if self.overrides:
            name += "[" + ",".join(f"{k}={short(v)}" for k, v in self.overrides) + "]"
        return name if len(name) <= limit else name[:limit - 2] + "…]"

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.method}/{self.model}/{self.dataset}/s{self.seed}" + (f"[{extra}]" if extra else "")


@dataclass(frozen=True)
class RunConfig:
    cell: Cell
    train: TrainConfig
    hparams: Any  # the method's HParams instance

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.cell.method, "model": self.cell.model, "dataset": self.cell.dataset,
            "seed": self.cell.seed, "profile": self.cell.profile,
            "overrides": dict(self.cell.overrides),
            "train": dataclasses.asdict(self.train),
            "hparams": dataclasses.asdict(self.hparams),
        }

    @property
    def cell_hash(self) -> str:
        payload = self.as_dict()
        payload.pop("overrides")  # already reflected in the resolved values
        payload["train"] = hashed_fields(self.train)
        payload["hparams"] = hashed_fields(self.hparams)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """The resolved config as MLflow params (train.* and hp.*)."""
        out = {"method": self.cell.method, "model": self.cell.model, "dataset": self.cell.dataset,
               "seed": str(self.cell.seed), "profile": self.cell.profile}
        out |= {f"train.{k}": str(v) for k, v in dataclasses.asdict(self.train).items()}
        out |= {f"hp.{k}": str(v) for k, v in dataclasses.asdict(self.hparams).items()}
        return out


def resolve(cell: Cell) -> RunConfig:
    """Defaults < profile < overrides. Unknown names and bad values raise UsageError."""
    from suite.data import DATASETS
    from suite.methods import METHODS
    from suite.models import check_model_name

    method_cls = lookup("method", METHODS, cell.method)
    lookup("dataset", DATASETS, cell.dataset)
    check_model_name(cell.model)
    profile = lookup("profile", PROFILES, cell.profile)
    if not isinstance(cell.seed, int) or cell.seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {cell.seed!r}")

    overrides = dict(cell.overrides)
    train_keys, hp_keys = set(keys_of(TrainConfig)), set(keys_of(method_cls.HParams))
    train_over = {k: v for k, v in overrides.items() if k in train_keys}
    hp_over = {k: v for k, v in overrides.items() if k not in train_keys}
    unknown = [k for k in hp_over if k not in hp_keys]
    if unknown:
        from suite.errors import nearest
        hint = nearest(unknown[0], train_keys | hp_keys)
        extra = f" Did you mean '{hint}'?" if hint else ""
        raise UsageError(
            f"unknown key '{unknown[0]}' for method '{cell.method}'.{extra} "
            f"Run settings: {', '.join(sorted(train_keys))}. "
            f"Method hparams: {', '.join(sorted(hp_keys)) or '(none)'}")

    train = apply_overrides(TrainConfig(), dict(profile), owner=f"profile '{cell.profile}'")
    train = apply_overrides(train, train_over, owner="run settings")
    hparams = apply_overrides(method_cls.HParams(), hp_over, owner=f"method '{cell.method}'")
    return RunConfig(cell=cell, train=train, hparams=hparams)
