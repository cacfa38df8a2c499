"""Off-the-clock measurements of one training step: FLOPs and memory kept for backward."""

from __future__ import annotations

import copy
import resource
import sys
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode


def saved_tensor_bytes():
    """Context manager + counter: bytes of distinct tensors autograd saves for backward."""
    seen: dict[tuple, int] = {}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), seen


def probe_step(method, batch) -> dict[str, float]:
    """Measure one steady-state training step on a deep copy of the method (the real run is not
    touched). The copy first takes one unmeasured step: a method's first step may do one-off work
    (penalty/AL initialise their auxiliary variables over the whole training set), which is not
    a step's cost, and under the counters' hooks that pass over 10k ResNet-20 inputs held ~7 GB."""
    if not method.flop_probe:
        return {}
    try:
        twin = copy.deepcopy(method)
    except Exception:  # a method holding processes or handles cannot be copied: no probe
        return {}
    hooks, seen = saved_tensor_bytes()
    counter = FlopCounterMode(display=False)
    try:
        with warnings.catch_warnings():
            # the copied scheduler takes the copied optimizer's step for an override: a false alarm
            warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
            twin.train_step(batch)  # one-off work, unmeasured
            with counter, hooks:
                twin.train_step(batch)
    finally:
        twin.close()
    return {"flops_per_step": float(counter.get_total_flops()),
            "saved_activation_mb": sum(seen.values()) / 2**20}


def process_peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
