"""Method registry: a plain dict from name to Method class. Add a method by adding a line here."""

from __future__ import annotations

from suite.methods.base import Context, Method
from suite.methods.bp import BP
from suite.methods.feedback import FEEDBACK_METHODS
from suite.methods.layer_parallel import LAYER_PARALLEL_METHODS
from suite.methods.local import LocalSGD
from suite.methods.sparsity import BPSparsity

METHODS: dict[str, type[Method]] = {
    BP.name: BP,
    **FEEDBACK_METHODS,  # fa, dfa, bdfa, hybrid-dfa, usf, brsf, frsf
    LocalSGD.name: LocalSGD,
    BPSparsity.name: BPSparsity,
    **LAYER_PARALLEL_METHODS,  # penalty, augmented-lagrangian, mgrit
}

__all__ = ["METHODS", "Context", "Method"]
