"""Timing helpers shared by the benchmarks: interleaved repeats, median of per-repeat times, and the
spread of paired ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


class Timings(dict):
    """Median seconds per candidate (the dict), with every repeat's sample kept (`samples`)."""

    def __init__(self, samples: dict[str, list[float]]):
        super().__init__({k: statistics.median(v) for k, v in samples.items()})
        self.samples = samples

    def spread(self, num: str, den: str) -> tuple[float, float]:
        """Interquartile range of the per-repeat ratios num_i / den_i: the candidates of one repeat
        ran back to back, so each pair saw the same state of the machine, and the range says how far
        the ratio moves with the machine's noise (a median a few percent from a target says nothing
        when the range spans it)."""
        ratios = sorted(a / b for a, b in zip(self.samples[num], self.samples[den]))
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
        return q[0], q[2]


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int = 5, warmup: int = 1,
                     block: int = 1) -> Timings:
    """Median seconds of one call of each function, the candidates interleaved so machine drift
    hits all alike. With `block` > 1 each sample times that many consecutive calls (and is divided
    by it): a training loop's steps run back to back on one model, which single calls interleaved
    with other candidates' calls do not reproduce."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(block):
                fn()
            samples[name].append((time.perf_counter() - t0) / block)
    return Timings(samples)


def report_ratio(label: str, value: float, target: str, ok: bool | None,
                 spread: tuple[float, float] | None = None) -> str:
    """One result line; `ok` None = a figure reported without a target. The verdict is the
    median's; `spread` (the per-repeat ratios' interquartile range) is printed beside it."""
    verdict = "(reported)" if ok is None else "PASS" if ok else "MISS"
    line = f"{label:<70s} {value:8.3f}   target {target:<10s} {verdict}"
    if spread is not None:
        line += f"   [IQR {spread[0]:.3f}–{spread[1]:.3f}]"
    print(line, flush=True)
    return line
