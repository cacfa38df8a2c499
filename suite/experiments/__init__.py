"""Experiment registry: a plain dict from name to Experiment. One module per paper or study."""

from __future__ import annotations

from suite.experiments import summary
from suite.experiments.base import Experiment, cross

EXPERIMENTS: dict[str, Experiment] = {
    summary.EXPERIMENT.name: summary.EXPERIMENT,
}

__all__ = ["EXPERIMENTS", "Experiment", "cross"]
