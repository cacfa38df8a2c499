"""The Method contract. The seam is the *update step*, not the loss: several methods never call
a global `loss.backward()`.

    validate(model)     -> raise UsageError for settings that can never work with this model
                           (e.g. more stages than blocks); runs before anything is logged
    workers(hparams)    -> processes/devices one run of this method needs (executors reserve them)
    check(model, data)  -> reason to skip this cell, or None
    setup(model, ctx)   -> build optimisers, feedback matrices, hooks, worker processes
    train_step(batch)   -> dict of scalar tensors ("loss" required, "correct" optional, then
                           method diagnostics); the harness calls .item() only when it logs
    end_epoch(epoch)    -> dict of floats (schedules, correction phases, diagnostics)
    predict(x)          -> logits (default: the model's forward), called in eval mode, no grad
    close()             -> release processes or hooks (default: nothing)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from suite.data import Batch, DataBundle
from suite.models import StagedModel


@dataclass
class Context:
    device: torch.device
    generator: torch.Generator  # the method's own randomness (feedback matrices, ...), seeded
    seed: int
    epochs: int
    steps_per_epoch: int
    num_classes: int
    data: DataBundle  # clean inputs by sample index, validation batches for diagnostics
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the tracking handle for artifacts
    log_artifact: Callable[[str, str], None] | None = None  # (filename, text) -> logged with the run

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @classmethod
    def for_data(cls, data: DataBundle, epochs: int = 1, seed: int = 0) -> Context:
        """A context on the data's device, for tests and benchmarks that drive a method directly."""
        return cls(device=data.device, generator=torch.Generator().manual_seed(seed), seed=seed, epochs=epochs,
                   steps_per_epoch=data.steps_per_epoch, num_classes=data.num_classes, data=data)


@dataclass(frozen=True)
class NoHParams:
    pass


class Method:
    name: ClassVar[str]
    HParams: ClassVar[type] = NoHParams
    summary: ClassVar[str] = ""  # one line for `bpsuite list methods`
    source: ClassVar[str] = ""  # where the method and its defaults come from
    flop_probe: ClassVar[bool] = True  # False: its step cannot run under FlopCounterMode (say why)

    def __init__(self, hparams: Any = None):
        self.hp = hparams if hparams is not None else self.HParams()
        self.model: StagedModel | None = None

    def validate(self, model: StagedModel) -> None:
        return None

    @classmethod
    def workers(cls, hparams: Any) -> int:
        return 1

    @classmethod
    def relative_cost(cls, hparams: Any) -> float:
        """Rough cost of a training step relative to `bp`'s on the same model: only for ordering a
        grid longest first (executors), never reported."""
        return 1.0

    def check(self, model: StagedModel, data: DataBundle) -> str | None:
        return None

    def setup(self, model: StagedModel, ctx: Context) -> None:
        self.model, self.ctx = model, ctx

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def close(self) -> None:
        pass

    @staticmethod
    def step_stats(logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two statistics every method reports: mean loss and the count of correct predictions."""
        return {"loss": loss.detach(), "correct": (logits.detach().argmax(1) == y).sum()}

    @staticmethod
    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)
