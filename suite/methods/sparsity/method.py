"""`bp-sparsity`: plain BP (the very same update as `bp`) that measures, on sampled steps, the
activation and gradient sparsity of every conv/linear layer and the exact MACs a sparsity-aware
forward and backward would need (Sarma et al. 2021, arXiv 2109.07710; what is verified and what is reconstructed:
docs/papers.md#sarma2021, docs/gradient-sparsity.md).

Sampled steps: every `sample_every`-th step and the first step of every epoch (so every epoch has
a record). Hooks exist only during a sampled step; no hook changes a value. The hooks' own cost
stays inside those steps' timing (about 0.3% of BP's epoch at the default sampling, measured by
`benchmarks/sparsity.py`); aggregating and logging the statistics is a diagnostic, off the clock.

Logged per epoch (means over the epoch's sampled steps):
  sp/act_in, sp/act_out, sp/dA, sp/dZ   fraction of zeros, unweighted mean over layers (NaN-free
                                         layers only: act_out/dA exist where an activation follows)
  sp/speedup_*                           whole-network modelled speedups = Σ dense MACs / Σ needed
  sp/<i>/act_in|act_out|dA|dZ|speedup_bwd  the same for layer i < log_layers (speedup NaN when the
                                         layer needs no backward MAC at all, e.g. zero dZ)
and the full per-layer tables of every sampled step as an artifact `sparsity/epoch-NNN.json`.

Speedups (ideal skippable MACs, not wall-clock; see docs/gradient-sparsity.md):
  speedup_bwd      backprop (dX + dW), input and output sparsity, vs dense backprop
  speedup_bwd_out  output sparsity only (dX at X = 0 not computed; dW dense)
  speedup_bwd_in   input sparsity only (zero operands of dX and dW skipped)
  speedup_fwd      forward with input sparsity vs dense forward
  speedup_train    forward + backprop, all of the above, vs a sparsity-agnostic (dense) step
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from suite.methods.bp import BP, BPHParams
from suite.methods.sparsity.macs import LayerMacs
from suite.methods.sparsity.probes import LayerStats, ProbeRecorder, is_activation
from suite.metrics import measured, modelled
from suite.params import param

TOTAL_KEYS = ("speedup_fwd", "speedup_bwd_out", "speedup_bwd_in", "speedup_bwd", "speedup_train")
FRACTION_DOCS = {"act_in": "zero fraction of the layers' inputs X", "act_out": "zero fraction of activation outputs",
                 "dA": "zero fraction of the gradient w.r.t. activation outputs",
                 "dZ": "zero fraction of the gradient w.r.t. the layers' outputs (pre-activation)"}
SPEEDUP_DOCS = {"speedup_fwd": "forward", "speedup_bwd_out": "backward, skipping on output-gradient zeros",
                "speedup_bwd_in": "backward, skipping on input zeros", "speedup_bwd": "backward, both",
                "speedup_train": "forward + backward"}
FRACTIONS = {k: measured(f"sp/{k}", "fraction", doc + ", mean over layers and sampled steps")
             for k, doc in FRACTION_DOCS.items()}
SPEEDUPS = {k: modelled(f"sp/{k}", "×", f"dense MACs / MACs left after skipping zeros: {doc}")
            for k, doc in SPEEDUP_DOCS.items()}
DENSE_GMACS = modelled("sp/gmacs_dense_step", "GMAC", "dense MACs of one training step")
SAMPLED_STEPS = measured("sp/sampled_steps", "1", "instrumented steps of the epoch")
LAYER_FRACTIONS = {k: measured(f"sp/{{layer}}/{k}", "fraction", doc + " at one layer") for k, doc in FRACTION_DOCS.items()}
LAYER_SPEEDUP = modelled("sp/{layer}/speedup_bwd", "×", "backward speedup at one layer (both kinds of zeros)")


@dataclass(frozen=True)
class BPSparsityHParams(BPHParams):
    sample_every: int = param(50, "instrument every N-th step (and the first step of every epoch)", low=1)
    log_layers: int = param(16, "log per-layer metrics for the first N layers (all go to the JSON artifact)",
                            low=0)
    # added after bp-sparsity runs were logged: not hashed at its default, so those cells keep their hashes
    update: bool = param(True, "apply BP's update; false measures every step at the initial weights (backward "
                                "only, no optimiser step: an instrumentation run that cannot diverge)",
                         hash_default=False)
    skip_zero_weights: bool = param(False, "also skip zero weights (weight sparsity; not the paper's "
                                           "activation-based sparsity, and zero-initialised layers would read as free)")


def _finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else float("nan")


def _nanmean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


class BPSparsity(BP):
    name = "bp-sparsity"
    HParams = BPSparsityHParams
    METRICS = (*FRACTIONS.values(), *SPEEDUPS.values(), DENSE_GMACS, SAMPLED_STEPS, *LAYER_FRACTIONS.values(),
               LAYER_SPEEDUP)
    summary = "BP (identical updates) + exact activation/gradient sparsity and skippable-MAC speedups per layer"
    source = ("Sarma et al. 2021, arXiv 2109.07710 (gradient output sparsity); counting rules reconstructed "
              "(docs/gradient-sparsity.md); BP recipe as `bp`")

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.layers = model.layers()
        self.activations = [m for m in model.modules() if is_activation(m)]
        names = {id(m): n for n, m in model.named_modules()}
        self.layer_names = [names.get(id(m), "?") for m in self.layers]
        self.step = 0
        self._epoch_records: list[tuple[int, list[LayerStats], list[dict]]] = []

    def is_sampled(self, step: int) -> bool:
        return step % self.hp.sample_every == 0 or step % self.ctx.steps_per_epoch == 0

    def train_step(self, batch):
        step, self.step = self.step, self.step + 1
        if not self.is_sampled(step):
            return self._bp_step(batch)
        with ProbeRecorder(self.layers, self.activations, self.hp.skip_zero_weights) as recorder:
            out = self._bp_step(batch)
        self._epoch_records.append((step, recorder.layer_stats(), recorder.activation_stats()))
        return out

    def _bp_step(self, batch):
        if self.hp.update:
            return super().train_step(batch)
        self.model.train()  # the same forward and backward as BP's step, without the optimiser step
        logits = self.model(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        return self.step_stats(logits, batch.y, loss)

    def diagnostics(self, epoch):
        records, self._epoch_records = self._epoch_records, []
        if not records:
            return {}
        per_layer = [sum((r[1][i] for r in records), LayerStats()) for i in range(len(self.layers))]
        total = sum((s.macs for s in per_layer), LayerMacs())
        fractions = [s.fractions() for s in per_layer]
        out = {FRACTIONS[k].key: _nanmean([f[k] for f in fractions]) for k in FRACTIONS}
        out |= {SPEEDUPS[k].key: _finite_or_nan(v) for k, v in total.speedups().items()}
        out[DENSE_GMACS.key] = (total.dense + total.dense_bwd) / len(records) / 1e9
        out[SAMPLED_STEPS.key] = float(len(records))
        for i in range(min(self.hp.log_layers, len(self.layers))):
            out |= {LAYER_FRACTIONS[k].name(layer=i): v for k, v in fractions[i].items() if not math.isnan(v)}
            out[LAYER_SPEEDUP.name(layer=i)] = _finite_or_nan(per_layer[i].macs.speedups()["speedup_bwd"])
        if self.ctx.log_artifact is not None:
            self.ctx.log_artifact(f"sparsity/epoch-{epoch:03d}.json", json.dumps(self.tables(records), indent=1))
        return out

    def tables(self, records) -> dict:
        """Per-layer rows of every sampled step (fractions, exact MAC counts, speedups)."""
        rows = []
        for step, stats, _ in records:
            for i, (layer, s) in enumerate(zip(self.layers, stats)):
                macs = s.macs
                rows.append({"step": step, "layer": i, "name": self.layer_names[i], "type": type(layer).__name__,
                             **s.fractions(), **{k: getattr(macs, k) for k in macs.__dataclass_fields__},
                             **macs.speedups()})
        acts = [{"step": step, "activation": j, "type": type(m).__name__,
                 "act_out": a["zeros"] / a["numel"] if a["numel"] else None,
                 "dA": a["grad_zeros"] / a["grad_numel"] if a["grad_numel"] else None}
                for step, _, act_rows in records for j, (m, a) in enumerate(zip(self.activations, act_rows))]
        return {"model": getattr(self.model, "name", ""), "layers": rows, "activations": acts}


def instrumented_steps(model_name: str, steps: int = 2, batch_size: int = 2, image_size: int = 224,
                       num_classes: int = 1000, seed: int = 0, **hparams) -> dict[str, float]:
    """Build a model and run a few instrumented BP steps on RANDOM inputs of ImageNet size (not
    ImageNet): uniformly random pixels and labels. Returns the network-level numbers of
    `diagnostics`. For a quick look without the harness or MLflow; the experiment runs the same
    thing through the harness on the `random-imagenet` dataset."""
    from suite.data import DATASETS, DataBundle, Split
    from suite.methods.base import Context
    from suite.models import build_model

    gen = torch.Generator().manual_seed(seed)
    split = Split(torch.randint(0, 256, (steps * batch_size, 3, image_size, image_size), generator=gen,
                                dtype=torch.uint8), torch.randint(0, num_classes, (steps * batch_size,), generator=gen))
    data = DataBundle(DATASETS["random-imagenet"], split, split, None, batch_size=batch_size, eval_batch_size=batch_size,
                      augment="none", device=torch.device("cpu"), channels_last=False)
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, num_classes)
    method = BPSparsity(BPSparsityHParams(sample_every=1, **hparams))
    method.setup(model, Context.for_data(data))
    for batch in data.train_batches(seed, 0):
        method.train_step(batch)
    return method.diagnostics(0)
