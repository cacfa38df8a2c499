"""A thread budget that a pool worker follows while it trains, so no core idles at a grid's tail.

The local process pool (`executors._pool`) starts each worker with cpus/jobs intra-op threads.
When fewer cells remain than workers, the executor raises a shared budget (cpus / cells still
running) and the running cells pick it up at their next training step or evaluation. Outside a
pool nothing is installed and `apply` does nothing. The harness logs each epoch's thread count
(`threads`), so a run's timings say what they were measured with.
"""

from __future__ import annotations

import torch

_budget = None  # a shared multiprocessing integer, set in pool workers only


def follow(shared) -> None:
    """Pool worker initializer: follow `shared` (a multiprocessing RawValue('i')) from now on."""
    global _budget
    _budget = shared
    apply()


def apply() -> None:
    if _budget is None:
        return
    n = _budget.value
    if n > 0 and n != torch.get_num_threads():
        torch.set_num_threads(n)
