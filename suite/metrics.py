"""Declared metrics: every key a run logs is declared once, with its unit and whether it is measured
on this machine or modelled (computed from counts under a stated cost model).

A declaration's key may hold placeholders in braces (`align/{unit}_mean`, `lp/violation_b{k}`):
the index placeholders (`NUMERIC`) stand for a number, the others for any text without '/'. Methods declare theirs in `Method.METRICS`
under their own namespace (the part before the first '/': `lp` for the layer-parallel methods,
`mgrit`, `local`, `sp` for sparsity, `align`/`walign`/`feedback` shared by the feedback-alignment
family, whose numbers are comparable across its methods); the harness declares the keys every run
logs (`HARNESS`). The harness rejects an undeclared key, so a report that reads a key through its
declaration (`Metric.columns`) reads what the methods actually log.

A declaration whose key was logged under another name before the namespaces existed says so in
`was` (same placeholders); `bpsuite migrate` (suite/migrate.py) renames such keys in an existing
MLflow store, per method, from the methods' own declarations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

KINDS = ("measured", "modelled")
NUMERIC = ("k", "i", "p", "unit", "layer")  # placeholders that stand for an index


@dataclass(frozen=True)
class Metric:
    key: str  # may hold {placeholders}, each one path segment
    unit: str  # "1" for a plain number, else e.g. "s", "MB", "cos", "deg", "×", "fraction"
    kind: str  # measured | modelled
    doc: str
    was: str = ""  # the key's name before the namespaces, if it had another (same placeholders)
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.key}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.was and set(_placeholders(self.was)) != set(_placeholders(self.key)):
            raise ValueError(f"metric {self.key}: was={self.was!r} must hold the same placeholders")
        object.__setattr__(self, "pattern", _compile(self.key))

    def renamed_from(self, old_key: str) -> str | None:
        """This declaration's name for `old_key` if `old_key` is an instance of `was` (else None):
        `lp/violation_b2` for `violation_b2` when was='violation_b{k}'."""
        match = _compile(self.was).match(old_key) if self.was else None
        return self.key.format(**match.groupdict()) if match else None

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0] if "/" in self.key else ""

    def matches(self, key: str) -> bool:
        return self.pattern.match(key) is not None

    def name(self, **values) -> str:
        """The concrete key for placeholder values: `Metric('lp/violation_b{k}').name(k=1)`."""
        return self.key.format(**values)

    def keys(self, logged: Iterable[str]) -> list[str]:
        """The logged keys this declaration covers, ordered by their placeholder values (indices
        as numbers: unit 2 before unit 10)."""
        def order(key):
            return tuple((0, int(v), "") if name in NUMERIC else (1, 0, v) for name, v in self.values(key).items())
        return sorted({k for k in logged if self.matches(k)}, key=order)

    def columns(self, columns: Iterable[str], prefix: str = "m.") -> list[str]:
        """Run-table columns (`m.<key>`) this declaration covers."""
        return [prefix + k for k in self.keys(c[len(prefix):] for c in columns if c.startswith(prefix))]

    def index(self, key: str, placeholder: str) -> int:
        """The number a key holds in an index placeholder: 2 for align/2_mean and 'unit'."""
        return int(self.values(key)[placeholder])

    def values(self, key: str) -> dict[str, str]:
        """Placeholder values of a concrete key: `{'k': '1'}` for lp/violation_b1."""
        match = self.pattern.match(key)
        if match is None:
            raise KeyError(f"{key} is not an instance of {self.key}")
        return match.groupdict()


def _segment(placeholder: str) -> str:
    return r"\d+" if placeholder in NUMERIC else r"[^/]+?"


def _placeholders(template: str) -> list[str]:
    return re.split(r"\{(\w+)\}", template)[1::2]


@functools.cache
def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_segment(p)})" for i, p in enumerate(parts))
    return re.compile(regex + r"\Z")


def undeclared(keys: Iterable[str], declared: Iterable[Metric]) -> list[str]:
    declared = list(declared)
    return sorted(k for k in keys if not any(m.matches(k) for m in declared))


def measured(key: str, unit: str, doc: str, was: str = "") -> Metric:
    return Metric(key, unit, "measured", doc, was)


def modelled(key: str, unit: str, doc: str, was: str = "") -> Metric:
    return Metric(key, unit, "modelled", doc, was)


# What the harness logs for every run (suite/harness.py, suite/measure.py).
TRAIN_LOSS = measured("train_loss", "nats", "mean training loss over the epoch's batches")
TRAIN_ACC = measured("train_acc", "fraction", "training accuracy over the epoch's batches (train mode)")
TEST_ACC = measured("test_acc", "fraction", "accuracy on the test split (eval mode, after the epoch)")
TEST_LOSS = measured("test_loss", "nats", "loss on the test split")
VAL_ACC = measured("val_acc", "fraction", "accuracy on the validation split held out of training")
VAL_LOSS = measured("val_loss", "nats", "loss on the validation split")
EPOCH_TIME = measured("epoch_time", "s", "time of the epoch's training steps and end_epoch (diagnostics excluded)")
TRAIN_TIME = measured("train_time", "s", "training time so far: the sum of epoch_time")
DIAG_TIME = measured("diag_time", "s", "time spent in the method's diagnostics so far (off the training clock)")
IMAGES_PER_S = measured("images_per_s", "1/s", "training images per second of epoch_time")
PHASE_TIME = measured("phase_time.{phase}", "s", "training time spent in a named phase of the method so far")
PHASE_EPOCHS = measured("phase_epochs.{phase}", "epochs", "epochs spent in a named phase so far")
DIVERGED_STEP = measured("diverged_step", "step", "step at which the run diverged (only for diverged runs)")
HARNESS = (
    TRAIN_LOSS, TRAIN_ACC, TEST_ACC, TEST_LOSS, VAL_ACC, VAL_LOSS, EPOCH_TIME, TRAIN_TIME, DIAG_TIME,
    IMAGES_PER_S, PHASE_TIME, PHASE_EPOCHS, DIVERGED_STEP,
    measured("params", "1", "trainable parameters of the model"),
    measured("train_samples", "1", "training samples the run learns from"),
    modelled("flops_per_step", "FLOP", "FLOPs of one training step, counted by torch's FlopCounterMode"),
    measured("saved_activation_mb", "MB", "memory autograd saves for backward in one step"),
    measured("peak_rss_mb", "MB", "peak resident memory of the process"),
    measured("peak_gpu_mb", "MB", "peak GPU memory allocated"),
    measured("steps", "1", "optimiser steps taken"),
    measured("gflops_per_s", "GFLOP/s", "counted FLOPs per second of training time"),
)
