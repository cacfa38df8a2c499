"""`hybrid-dfa`: DFA combined with BP (Han & Yoo 2019; Han et al. 2020). Every part of the
split is a reconstruction: the papers' abstracts say only that DFA is "combined with the
conventional BP" (2019) and that the network is "divided into several modules" with DFA applied
"within the module" (2020); nothing more about the split is available.

Presets (`preset`):
  conv-bp+fc-dfa  hidden FC layers trained by DFA, conv layers by BP (the reading the evidence
                  weakly favours: the 2019 paper's tracking application updates only its FC
                  layers with BDFA).
  conv-dfa+fc-bp  conv layers trained by DFA, the FC stack (and head) by BP.
  modulewise      stem+blocks cut into `modules` contiguous groups (as equal as possible; the
                  head joins the last); BP inside each module; the DFA signal B_m e enters at each
                  module's output; the last module is trained by BP from the loss. One module is
                  BP exactly; one module per unit is block-granularity DFA (except that the last
                  block is trained through the head).

For the conv/FC presets, the `boundary` hparam says what the top of the conv stack receives:
`bp` (the true backward of the FC unit above it) or `dfa` (its own projection B e); which one
the paper used is not known. Units whose kind is DFA use `granularity` as in `dfa`. A model
without both a hidden conv part and a hidden FC part (conv stack first) cannot be split by
layer type: the cell is skipped with that reason. `feedback=sparse` gives the sparse backward
weights of the 2020 paper (a reconstruction: see matrices.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from suite.errors import UsageError
from suite.methods.feedback.alignment import units
from suite.methods.feedback.dfa import DFA, DFAHParams
from suite.methods.feedback.engine import FeedbackPlan
from suite.models import weight_layers
from suite.params import param

PRESETS = ("conv-bp+fc-dfa", "conv-dfa+fc-bp", "modulewise")


@dataclass(frozen=True)
class HybridHParams(DFAHParams):
    style: str = param("nokland", "hybrids are Nøkland-style DFA (see dfa)", choices=("nokland",))
    preset: str = param("conv-bp+fc-dfa", "which layers DFA trains (see docs/feedback-alignment.md)", choices=PRESETS)
    modules: int = param(3, "modulewise: number of modules (contiguous groups of stem+blocks)", low=1)
    boundary: str = param("bp", "conv/fc presets: the top conv unit gets the true BP gradient from the FC "
                                "unit above (bp) or its own DFA projection (dfa)", choices=("bp", "dfa"))


def unit_kinds(model) -> list[str | None]:
    """'conv' (has a Conv2d), 'fc' (only Linear) or None (no weights) per unit; a unit without
    weights takes the kind of the unit before it (the first, of the unit after it)."""
    kinds = []
    for unit in units(model):
        layers = weight_layers(unit)
        kinds.append(None if not layers else "conv" if any(isinstance(m, nn.Conv2d) for m in layers) else "fc")
    known = [k for k in kinds if k]
    prev = known[0] if known else None
    for i, k in enumerate(kinds):
        kinds[i] = prev = k or prev
    return kinds


def module_groups(n_units: int, modules: int) -> list[list[int]]:
    return [list(g) for g in np.array_split(np.arange(n_units), modules)]


class HybridDFA(DFA):
    name = "hybrid-dfa"
    HParams = HybridHParams
    summary = "DFA combined with BP: by layer type (two presets) or module-wise (BP inside modules)"
    source = ("Han & Yoo 2019 (arXiv 1901.01986), Han et al. 2020 (arXiv 2006.12830); the splits are "
              "reconstructions (docs/feedback-alignment.md)")

    def reject_settings(self, model, run, device):
        n = len(units(model))
        if self.hp.preset == "modulewise" and self.hp.modules > n:
            raise UsageError(f"hybrid-dfa: modules={self.hp.modules} but {model.name or 'the model'} has only "
                             f"{n} units (stem + blocks); choose modules <= {n}")

    def skip_reason(self, model, data):
        if self.hp.preset == "modulewise":
            return None
        kinds = unit_kinds(model)
        if "conv" not in kinds or "fc" not in kinds:
            return (f"preset {self.hp.preset} needs hidden conv and hidden FC layers; "
                    f"{model.name or 'this model'} has only {'conv' if 'conv' in kinds else 'fc'} hidden units")
        if kinds != sorted(kinds, key=lambda k: k != "conv"):
            return f"preset {self.hp.preset} needs the conv stack before the FC stack"
        return None

    def plan(self, model) -> FeedbackPlan:
        n = len(units(model))
        if self.hp.preset == "modulewise":
            ends = {g[-1] for g in module_groups(n, self.hp.modules)[:-1]}
            return FeedbackPlan(tuple("dfa" if i in ends else "bp" for i in range(n)), (False,) * n)
        kinds = unit_kinds(model)
        dfa_kind = "fc" if self.hp.preset == "conv-bp+fc-dfa" else "conv"
        last_conv = max(i for i, k in enumerate(kinds) if k == "conv")
        boundary, inner = [], []
        for i, kind in enumerate(kinds):
            by_dfa = kind == dfa_kind
            boundary.append(self.hp.boundary if i == last_conv else "dfa" if by_dfa else "bp")
            inner.append(by_dfa and self.hp.granularity == "layer")
        return FeedbackPlan(tuple(boundary), tuple(inner))
