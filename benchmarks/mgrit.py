"""MGRIT training steps with the layer chunks in 2 processes vs 1 (issue: layer-parallel training,
`mgrit`; no target in the issue: the ratios are reported).

One-shot `mgrit` (2 forward + 1 adjoint iterations, c = 4, 3 levels) on `odenet:16-<width>-fc`,
3×32×32 input, batch 128, in three placements of the same mathematics, timed side by side,
interleaved: one process with one intra-op thread, one process with two threads (all of this
machine's cores), and two processes (`workers=2`) with one thread each. Two widths: at width 8 a
message of one state costs about as much as a layer evaluation on this machine (loopback gloo),
at width 32 the layers are ≈ 16× dearer and the messages 4×, so compute dominates.

`python -m benchmarks.mgrit [--widths 8 32] [--steps 4]`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import report_ratio, time_interleaved
from benchmarks.local import bundle
from suite.methods import Context
from suite.methods.layer_parallel.mgrit_method import Mgrit, MgritHParams
from suite.models import build_model

PLACEMENTS = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2), "2 processes, 1 thread each": (2, 1)}


def setup(data, model_name: str, workers: int) -> Mgrit:
    torch.manual_seed(0)
    model = build_model(model_name, (3, 32, 32), 10)
    method = Mgrit(MgritHParams(workers=workers, probe_iters=0))
    method.setup(model, Context.for_data(data, epochs=1))
    return method


def main(widths: tuple[int, ...] = (8, 32), steps: int = 4, batch: int = 128) -> None:
    threads = torch.get_num_threads()
    data = bundle(steps, batch, torch.device("cpu"))
    data.channels_last = False  # states travel between processes as plain contiguous buffers
    batches = list(data.train_batches(0, 0))
    try:
        for width in widths:
            model_name = f"odenet:16-{width}-fc"
            methods = {name: (setup(data, model_name, workers), n_threads)
                       for name, (workers, n_threads) in PLACEMENTS.items()}

            def epoch(method, n_threads):
                def fn():
                    torch.set_num_threads(n_threads)
                    for b in batches:
                        method.train_step(b)
                return fn

            t = time_interleaved({k: epoch(*m) for k, m in methods.items()}, repeats=3, warmup=1)
            for name, seconds in t.items():
                print(f"  {model_name} {name:>27s}: {seconds / steps * 1e3:7.1f} ms/step")
            two = t["2 processes, 1 thread each"]
            report_ratio(f"mgrit {model_name}: 2 processes / 1 process, 1 thread (speedup)",
                         t["1 process, 1 thread"] / two, "none", None)
            report_ratio(f"mgrit {model_name}: 2 processes / 1 process, 2 threads (speedup)",
                         t["1 process, 2 threads"] / two, "none", None)
            for method, _ in methods.values():
                method.close()
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    main(tuple(args.widths), args.steps, args.batch)
