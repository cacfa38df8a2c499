"""Layer-parallel training: auxiliary-variable methods (`penalty`, `augmented-lagrangian`) that
cut the blocks into stages solved in parallel, and `mgrit`, which replaces the serial forward and
adjoint sweeps through runs of ODE-form residual blocks by multigrid-in-layer iterations.
See docs/layer-parallel.md for every reconstructed choice."""

from __future__ import annotations

from suite.methods.layer_parallel.mgrit_method import Mgrit
from suite.methods.layer_parallel.penalty import AugmentedLagrangian, Penalty

LAYER_PARALLEL_METHODS: dict = {}
LAYER_PARALLEL_METHODS |= {Penalty.name: Penalty, AugmentedLagrangian.name: AugmentedLagrangian}
LAYER_PARALLEL_METHODS |= {Mgrit.name: Mgrit}
