"""Where the localized prefix may end: block boundaries of a StagedModel.

Layers are the entries of `model.layers()` (every Conv2d/Linear, stem first, head last). A block's
shortcut 1×1 conv belongs to its block (it is counted among the block's layers, in registration
order). BatchNorm is not a layer: it goes with the block it sits in. The prefix is always a run of
whole units — the stem, then blocks 0..k−1 — because a residual block cannot be cut inside (its
skip path would cross the cut). The head is never localized.

Rounding rule: a requested count N of local layers becomes the largest cut whose layer count is
≤ N (never more local layers than asked). Among cuts with equal counts the shortest prefix is used,
so N = 0 always means "nothing localized" (exactly BP).
"""

from __future__ import annotations

from dataclasses import dataclass

from suite.models import StagedModel, weight_layers


@dataclass(frozen=True)
class Cut:
    units: int  # how many of [stem, *blocks] run in the localized prefix
    layers: int  # how many entries of model.layers() they hold


def cuts(model: StagedModel) -> list[Cut]:
    """Every admissible boundary, shortest prefix first: nothing, stem, stem+block0, ... A cut
    must leave at least one layer to SGD (a model whose head has no layer cannot localize its
    last block)."""
    units = [model.stem, *model.blocks]
    total = len(model.layers())
    out, count = [Cut(0, 0)], 0
    for i, unit in enumerate(units, start=1):
        count += len(weight_layers(unit))
        if out[-1].layers < count < total:
            out.append(Cut(i, count))
    return out


def round_down(model_cuts: list[Cut], n_layers: int) -> Cut:
    """The largest admissible cut holding at most `n_layers` layers."""
    best = model_cuts[0]
    for cut in model_cuts:
        if cut.layers <= n_layers:
            best = cut
    return best


def next_cut(model_cuts: list[Cut], current: Cut) -> Cut:
    """The first cut deeper than `current` (itself if none is deeper)."""
    deeper = [c for c in model_cuts if c.layers > current.layers]
    return deeper[0] if deeper else current
