"""The DFA forward pass: where the output error enters the network, and where it does not flow.

The network is seen as units (stem, blocks…) followed by the head. A `FeedbackPlan` says, for
every unit, what its output receives in the backward pass:

  'dfa'  a feedback point: the output gets B_l e (e = dL/dlogits) and the next unit reads it
         *detached*, so no gradient flows from above into this unit (no backward locking, and no
         backward-data convolution is ever run for the layer that reads it);
  'bp'   the output is passed on as is: the unit gets the true backward of what lies above.

and whether the unit has *inner* feedback points (per-layer granularity): the input of each of
its weight layers, once another weight layer of the unit has run, becomes a feedback point too
(in a ResNet BasicBlock: the output of conv1-bn1-relu1, i.e. conv2's input; the shortcut conv
and conv1 read the block input, which is never an inner point). A tensor read by several layers
is one point.

The feedback enters at *post-activation* outputs h_l = f(a_l), so autograd through f gives
Nøkland's δ_l = (B_l e) ⊙ f'(a_l) (and through BatchNorm/pooling where they sit between the
weight layer and the point). The head always gets its true gradient e. All points are inputs of
one autograd Function placed on the logits, whose backward returns e to the logits and B_l e to
every point in one matmul.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from suite.methods.feedback.alignment import units
from suite.models import StagedModel, weight_layers


@dataclass(frozen=True)
class FeedbackPlan:
    boundary: tuple[str, ...]  # per unit: "dfa" or "bp"
    inner: tuple[bool, ...]  # per unit: per-layer feedback points inside it

    @classmethod
    def uniform(cls, n_units: int, boundary: str, inner: bool) -> FeedbackPlan:
        return cls((boundary,) * n_units, (inner,) * n_units)


class DirectFeedback(torch.autograd.Function):
    """Identity on the logits; backward: e to the logits and B_l e to every feedback point."""

    @staticmethod
    def forward(ctx, logits, bank, *points):
        ctx.bank = bank
        return logits.clone()

    @staticmethod
    def backward(ctx, error):
        return (error, None, *ctx.bank.project(error))


@contextmanager
def inner_points(unit: torch.nn.Module, points: list[torch.Tensor]):
    """While the unit runs, turn the inputs of its later weight layers into feedback points."""
    state = {"ran": False}
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def before(module, args):
        x = args[0]
        hit = seen.get(id(x))
        if hit is None:
            replacement = x
            if state["ran"] and x.requires_grad:
                points.append(x)
                replacement = x.detach()
            seen[id(x)] = hit = (x, replacement)  # keeps x alive, so its id is not reused
        return (hit[1], *args[1:])

    def after(module, args, out):
        state["ran"] = True

    handles = []
    for layer in weight_layers(unit):
        handles.append(layer.register_forward_pre_hook(before))
        handles.append(layer.register_forward_hook(after))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def feedback_forward(model: StagedModel, x: torch.Tensor, plan: FeedbackPlan, bank=None):
    """Forward under `plan`. Returns (logits, feedback points, unit outputs). With `bank`, the
    logits carry the DirectFeedback node, so `loss.backward()` is the whole DFA update."""
    points: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    h = x
    for i, unit in enumerate(units(model)):
        with inner_points(unit, points) if plan.inner[i] else nullcontext():
            out = unit(h)
        outs.append(out)
        if plan.boundary[i] == "dfa" and out.requires_grad:
            points.append(out)
            h = out.detach()
        else:
            h = out
    logits = model.head(h)
    if bank is not None and points:
        logits = DirectFeedback.apply(logits, bank, *points)
    return logits, points, outs


def point_layout(model: StagedModel, x: torch.Tensor, plan: FeedbackPlan) -> tuple[list, list]:
    """Per-sample shapes and memory formats of the feedback points, from a dry run (eval mode,
    so BatchNorm statistics are untouched)."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            _, points, _ = feedback_forward(model, x, plan)
    finally:
        model.train(was_training)
    shapes = [tuple(p.shape[1:]) for p in points]
    channels_last = [p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
                     for p in points]
    return shapes, channels_last
