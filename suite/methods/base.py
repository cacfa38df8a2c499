"""The Method contract. The seam is the *update step*, not the loss: several methods never call
a global `loss.backward()`.

    reject_settings(model, run, device) -> raise UsageError for settings that can never work with this
                           model and these run settings (more stages than blocks, worker processes
                           on a GPU, ...); runs before a run is claimed, so nothing is logged
    workers(hparams)    -> processes/devices one run of this method needs (executors reserve them)
    skip_reason(model, data) -> a reason this cell does not apply (logged as `skipped`), or None;
                           a legitimate outcome, not an error
    setup(model, ctx)   -> build optimisers, feedback matrices, hooks, worker processes
    train_step(batch)   -> dict of scalar tensors ("loss" required, "correct" optional, then
                           method statistics of the step); .item() is called only when logging
    end_epoch(epoch)    -> dict of floats: training work at the end of an epoch (schedules,
                           phase switches); ON the clock
    diagnostics(epoch)  -> dict of floats: measurements that are not part of the update
                           (alignment, residual probes, statistics); OFF the clock, its wall
                           time logged separately as `diag_time`
    phase(epoch)        -> name of the training phase of an epoch, or None (one phase)
    predict(x)          -> logits (default: the model's forward), called in eval mode, no grad
    close()             -> release processes or hooks (default: nothing); every attribute it
                           touches exists from construction, so it needs no guards

Methods see `ctx.data`, a `TrainingData` view: the training split, the validation split when
there is one, and a fixed probe split held out of the training set for diagnostics. The test
split is the harness's alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from suite.data import Batch, DataBundle, TrainingData
from suite.metrics import HARNESS, Metric
from suite.models import StagedModel

if TYPE_CHECKING:  # an annotation only: suite.config resolves a cell with the method registry
    from suite.config import TrainConfig


@dataclass
class Context:
    device: torch.device
    generator: torch.Generator  # the method's own randomness (feedback matrices, ...), seeded
    seed: int
    epochs: int
    steps_per_epoch: int
    num_classes: int
    data: TrainingData  # training split, validation and probe splits; never the test split
    log_artifact: Callable[[str, str], None] | None = None  # (filename, text) -> logged with the run

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @classmethod
    def for_data(cls, data: DataBundle, epochs: int = 1, seed: int = 0) -> Context:
        """A context on the data's device, for tests and benchmarks that drive a method directly."""
        return cls(device=data.device, generator=torch.Generator().manual_seed(seed), seed=seed, epochs=epochs,
                   steps_per_epoch=data.steps_per_epoch, num_classes=data.num_classes,
                   data=data.training_view() if isinstance(data, DataBundle) else data)


@dataclass(frozen=True)
class NoHParams:
    pass


class Method:
    name: ClassVar[str]
    HParams: ClassVar[type] = NoHParams
    summary: ClassVar[str] = ""  # one line for `bpsuite list methods`
    source: ClassVar[str] = ""  # where the method and its defaults come from
    flop_probe: ClassVar[bool] = True  # False: its step cannot run under FlopCounterMode (say why)
    # Every key the method's train_step (besides loss/correct), end_epoch and diagnostics return,
    # under the method's namespace (suite/metrics.py); the harness rejects an undeclared one.
    METRICS: ClassVar[tuple[Metric, ...]] = ()

    def __init__(self, hparams: Any = None):
        self.hp = hparams if hparams is not None else self.HParams()
        self.model: StagedModel | None = None

    @classmethod
    def declared_metrics(cls) -> tuple[Metric, ...]:
        """What a run of this method may log: the harness's metrics and the method's own."""
        return HARNESS + cls.METRICS

    def reject_settings(self, model: StagedModel, run: TrainConfig, device: torch.device) -> None:
        """`device`: where the run will train (`run.device` resolved: "auto" is already cuda or cpu)."""
        return None

    @classmethod
    def workers(cls, hparams: Any) -> int:
        return 1

    @classmethod
    def relative_cost(cls, hparams: Any) -> float:
        """Rough cost of a training step relative to `bp`'s on the same model: only for ordering a
        grid longest first (executors), never reported."""
        return 1.0

    def skip_reason(self, model: StagedModel, data: DataBundle) -> str | None:
        return None

    def setup(self, model: StagedModel, ctx: Context) -> None:
        self.model, self.ctx = model, ctx

    def make_optimiser(self, params=None, start_step: int = 0):
        """The method's optimiser over `params` (default: every model parameter) from its
        OptimHParams, on the run's per-step schedule, with `before_step` between backward and step."""
        from suite.methods.optim import Optimiser
        return Optimiser(self.model.parameters() if params is None else params, self.hp, self.ctx.total_steps,
                         self.ctx.steps_per_epoch, before_step=self.before_step, start_step=start_step)

    def before_step(self) -> None:
        """Called by the optimiser after the backward pass and before the update: the place to
        change a gradient (e.g. `p.grad.sign_()`). The default changes nothing."""

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def diagnostics(self, epoch: int) -> dict[str, float]:
        return {}

    def phase(self, epoch: int) -> str | None:
        """The training phase `epoch` belongs to (e.g. "parallel", "serial"), or None for a method
        with one phase; the harness sums training time per phase."""
        return None

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
