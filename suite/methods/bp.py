"""`bp`: the backpropagation baseline, end to end, with the standard CIFAR ResNet recipe."""

from __future__ import annotations

from dataclasses import dataclass

from suite.methods.base import Method
from suite.methods.optim import OptimHParams


@dataclass(frozen=True)
class BPHParams(OptimHParams):
    pass


class BP(Method):
    name = "bp"
    HParams = BPHParams
    summary = "backpropagation with SGD+momentum or Adam (the baseline)"
    source = "He et al. 2016 CIFAR recipe (lr 0.1, momentum 0.9, wd 1e-4, /10 at 50% and 75%)"

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.optim = self.make_optimiser()

    def train_step(self, batch):
        self.model.train()
        logits = self.model(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.optim.step(loss)
        return self.step_stats(logits, batch.y, loss)
