"""Experiment registry: a plain dict from name to Experiment. One module per paper or study."""

from __future__ import annotations

from suite.experiments import (
    biotorch_mnist,
    dfa_transfer,
    gradient_sparsity,
    layer_parallel,
    local_schedules,
    mgrit,
    summary,
)
from suite.experiments.base import Experiment, cross
from suite.experiments.feedback_family import FEEDBACK_EXPERIMENTS

EXPERIMENTS: dict[str, Experiment] = {
    summary.EXPERIMENT.name: summary.EXPERIMENT,
    biotorch_mnist.EXPERIMENT.name: biotorch_mnist.EXPERIMENT,
    **FEEDBACK_EXPERIMENTS,  # dfa-cnn, biotorch-resnet, launay-bottleneck
    dfa_transfer.EXPERIMENT.name: dfa_transfer.EXPERIMENT,
    gradient_sparsity.EXPERIMENT.name: gradient_sparsity.EXPERIMENT,
    local_schedules.EXPERIMENT.name: local_schedules.EXPERIMENT,
    layer_parallel.EXPERIMENT.name: layer_parallel.EXPERIMENT,
    mgrit.EXPERIMENT.name: mgrit.EXPERIMENT,
}

__all__ = ["EXPERIMENTS", "Experiment", "cross"]
