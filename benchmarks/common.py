"""Timing helpers shared by the benchmarks: interleaved repeats, median of per-repeat times."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int = 5, warmup: int = 1,
                     block: int = 1) -> dict[str, float]:
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
    return {k: statistics.median(v) for k, v in samples.items()}


def report_ratio(label: str, value: float, target: str, ok: bool | None) -> str:
    """One result line; `ok` None = a figure reported without a target."""
    verdict = "(reported)" if ok is None else "PASS" if ok else "MISS"
    line = f"{label:<70s} {value:8.3f}   target {target:<10s} {verdict}"
    print(line, flush=True)
    return line
