"""Alignment diagnostics (Launay, Poli & Krzakala 2019; BioTorch).

Gradient alignment: on one fixed batch, the per-sample cosine between the signal a method
delivers to a unit's output (stem or block output: what its weights are updated from) and the
true BP gradient of the loss w.r.t. the same tensor, both flattened per sample; mean and std over
the batch. This follows the authors' procedure (`dfatools/models.py`: the same weights, one
validation batch, backward hooks on module outputs, `CosineSimilarity(dim=1)`), measured at
unit outputs (post-activation), on the probe split (a fixed part of the training set held out
for diagnostics), never the test split. Both passes run in eval mode (BatchNorm uses its running
statistics, nothing in the model changes); that choice is this suite's.

Weight alignment (FA and the sign-symmetric methods): the angle in degrees between a layer's
forward weight and its feedback matrix, both flattened, as BioTorch reports it
(`biotorch/layers/metrics.py`, `compute_matrix_angle`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from suite.metrics import measured
from suite.models import StagedModel

ALIGN_UNIT = measured("align/{unit}_mean", "cos", "per-sample cosine between the method's signal and BP's "
                      "gradient at a unit's output (unit 0 = stem, unit i = block i−1), mean over the probe batch")
ALIGN_UNIT_STD = measured("align/{unit}_std", "cos", "standard deviation over the probe batch of that cosine")
ALIGN_MEAN = measured("align/mean", "cos", "unweighted mean of align/{unit}_mean over the measured units")
WALIGN_LAYER = measured("walign/{i}_deg", "deg", "angle between a layer's weights and its feedback weights")
WALIGN_MEAN = measured("walign/mean_deg", "deg", "mean weight-feedback angle over all layers")
GRADIENT_ALIGNMENT = (ALIGN_UNIT, ALIGN_UNIT_STD, ALIGN_MEAN)
WEIGHT_ALIGNMENT = (WALIGN_LAYER, WALIGN_MEAN)


def units(model: StagedModel) -> list[torch.nn.Module]:
    """The sequence feedback is organised on: the stem, then every block (the head is separate)."""
    return [model.stem, *model.blocks]


def bp_unit_grads(model: StagedModel, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor | None]:
    """True gradient of the mean cross-entropy w.r.t. every unit output (None: needs no grad)."""
    outs = []
    h = x
    for unit in units(model):
        h = unit(h)
        outs.append(h)
    loss = F.cross_entropy(model.head(h), y)
    return grads_wrt(loss, outs)


def grads_wrt(loss: torch.Tensor, outs: list[torch.Tensor]) -> list[torch.Tensor | None]:
    wanted = [i for i, t in enumerate(outs) if t is not None and t.requires_grad]
    got = torch.autograd.grad(loss, [outs[i] for i in wanted], allow_unused=True)
    result: list[torch.Tensor | None] = [None] * len(outs)
    for i, g in zip(wanted, got):
        result[i] = g
    return result


def cosine_stats(signal: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    """Mean and std over samples of the per-sample cosine similarity."""
    cos = F.cosine_similarity(signal.flatten(1).double(), true.flatten(1).double(), dim=1, eps=1e-30)
    return float(cos.mean()), float(cos.std()) if len(cos) > 1 else 0.0


def alignment_metrics(signals: list[torch.Tensor | None], true: list[torch.Tensor | None]) -> dict[str, float]:
    """`align/<unit>_mean`, `align/<unit>_std` (unit 0 = stem, unit i = block i−1) and `align/mean`
    (unweighted mean over the measured units)."""
    out, means = {}, []
    for i, (s, t) in enumerate(zip(signals, true)):
        if s is None or t is None:
            continue
        mean, std = cosine_stats(s, t)
        out[ALIGN_UNIT.name(unit=i)], out[ALIGN_UNIT_STD.name(unit=i)] = mean, std
        means.append(mean)
    if means:
        out[ALIGN_MEAN.key] = sum(means) / len(means)
    return out


def weight_angle_deg(weight: torch.Tensor, feedback: torch.Tensor) -> float:
    cos = F.cosine_similarity(weight.detach().flatten().double(), feedback.detach().flatten().double(), dim=0)
    return math.degrees(math.acos(max(-1.0, min(1.0, float(cos)))))


def weight_alignment(layers, feedback: list[torch.Tensor], log_layers: int) -> dict[str, float]:
    """`walign/<i>_deg` for the first `log_layers` layers and `walign/mean_deg` over all."""
    angles = [weight_angle_deg(layer.weight, fb) for layer, fb in zip(layers, feedback)]
    out = {WALIGN_LAYER.name(i=i): a for i, a in enumerate(angles[:log_layers])}
    out[WALIGN_MEAN.key] = sum(angles) / len(angles)
    return out


def fixed_batch(data, samples: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first `samples` examples of the probe split (held out of training for diagnostics), else
    of the validation split; None when there is neither. The test split is never read."""
    for split in ("probe", "val"):
        xs, ys, n = [], [], 0
        for batch in data.eval_batches(split):
            xs.append(batch.x)
            ys.append(batch.y)
            n += len(batch)
            if n >= samples:
                break
        if xs:
            return torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    return None


class AlignmentProbe:
    """Measures gradient alignment of a method against BP on a fixed batch (off the training path).

    `signal_fn(x, y) -> list[tensor | None]` gives the method's signal at each unit output."""

    def __init__(self, model: StagedModel, data, samples: int, every: int):
        self.model, self.every = model, every
        self.batch = fixed_batch(data, samples) if samples > 0 and every > 0 else None

    def due(self, epoch: int) -> bool:
        return self.batch is not None and (epoch + 1) % self.every == 0

    def measure(self, signal_fn) -> dict[str, float]:
        x, y = self.batch
        was_training = self.model.training
        self.model.eval()
        try:
            true = bp_unit_grads(self.model, x, y)
            signals = signal_fn(x, y)
        finally:
            self.model.train(was_training)
        return alignment_metrics(signals, true)
