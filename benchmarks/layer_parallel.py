"""Throughput of the layer-parallel phase (issue: layer-parallel training, `penalty`).

The parallel phase of `penalty` on ResNet-20 (3×32×32, batch 128, K = 2 stages) in two placements
of the same mathematics: both stages in one process one after the other (`distributed=false`, one
intra-op thread) vs one worker process per stage (`distributed=true`, one thread each), timed
side by side, interleaved; the model in channels_last, as a run builds it, and one stage cut
(`balance=time`, searched once) for both. Target: 2 processes ≥ 1.6× the images/s of 1 process on 2 cores.
Also prints the per-stage compute split, the modelled K-device speedup the method logs, and two
bounds measured or computed in the same run: the machine's own concurrency ceiling (two
independent one-thread processes doing the same training steps, their throughput over one
alone: what 2 cores give two compute-bound processes here, memory bandwidth and caches shared)
and the stage-balance bound (1 / the largest stage's share of the compute).

`python -m benchmarks.layer_parallel [--model resnet20] [--stages 2] [--steps 10]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.multiprocessing as mp

from benchmarks.common import report_ratio, time_interleaved
from benchmarks.local import bundle
from suite.methods import Context
from suite.methods.layer_parallel.penalty import Penalty, PenaltyHParams
from suite.models import build_model

REPEATS, WARMUP = 7, 1  # interleaved timed epochs per placement, and untimed ones before them
CEILING_PAIRS = 3


def setup(data, model_name: str, stages: int, distributed: bool, stage_blocks: tuple[int, ...] = ()) -> Penalty:
    torch.manual_seed(0)
    # as the harness builds it for a run (channels_last is the default run setting on CPU): the stages'
    # convolutions take that memory format from their weights whatever the layout of the buffers
    model = build_model(model_name, (3, 32, 32), 10).to(memory_format=torch.channels_last)
    method = Penalty(PenaltyHParams(stages=stages, serial_share=0.0, distributed=distributed, worker_threads=1,
                                    balance="time", stage_blocks=stage_blocks))
    method.setup(model, Context.for_data(data, epochs=100))
    return method


def _busy(steps: int, batch: int, start, done) -> None:
    """A compute-bound one-thread workload: ResNet-20 training steps at the benchmark's batch size, in
    the stages' memory format (the footprint decides how much the two cores' shared memory
    bandwidth and cache cost)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    step()
    start.wait()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    done.put(time.perf_counter() - t0)


def concurrency_ceiling(processes: int, batch: int, steps: int = 10,
                        repeats: int = CEILING_PAIRS) -> tuple[float, float, float]:
    """Throughput of `processes` independent copies of the same one-thread work run at once over
    one copy alone (each measured from a common start, after a warm-up step), `repeats` pairs
    alternated: (median, lowest, highest) of the pairs' ratios — one pair alone read anywhere from
    1.55 to 2.15 on the same machine within an hour."""
    ctx = mp.get_context("spawn")

    def wall(n: int) -> float:
        start, done = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_busy, args=(steps, batch, start, done)) for _ in range(n)]
        for proc in procs:
            proc.start()
        seconds = [done.get() for _ in procs]
        for proc in procs:
            proc.join()
        return max(seconds)
    ratios = sorted(processes * wall(1) / wall(processes) for _ in range(repeats))
    return statistics.median(ratios), ratios[0], ratios[-1]


def main(model_name: str = "resnet20", stages: int = 2, steps: int = 10, batch: int = 128) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the one-process placement gets one core, as each worker does
    try:
        data = bundle(steps, batch, torch.device("cpu"))
        # the cut is searched once (balance=time) and given to both placements, so they compute the same
        # thing: two searches can land on different cuts when two are close
        local = setup(data, model_name, stages, False)
        cut = tuple(stop - start for start, stop in local.bounds)
        print(f"  time-balanced cut: {cut} blocks per stage (searched in {local.cut_seconds:.1f} s)")
        methods = {"1 process": local, f"{stages} processes": setup(data, model_name, stages, True, cut)}
        batches = list(data.train_batches(0, 0))

        def epoch(method):
            def fn():
                for b in batches:
                    method.train_step(b)
            return fn

        t = time_interleaved({k: epoch(m) for k, m in methods.items()}, repeats=REPEATS, warmup=WARMUP)
        images = steps * batch
        for name, seconds in t.items():
            print(f"  {name:>12s}: {images / seconds:7.1f} images/s ({seconds:.2f} s for {steps} steps)")
        for name, m in methods.items():
            print(f"  {name:>12s}: parts per stage (stem/blocks/head) {[len(s) for s in m.stages]}")
        split = methods["1 process"].stage_seconds
        print("  stage compute share (1 process): " + ", ".join(f"{float(s / split.sum()):.2f}" for s in split))
        modelled = methods["1 process"].end_epoch(0)["lp/modelled_speedup"]
        print(f"  modelled speedup on {stages} devices (max over stages + communication at "
              f"{methods['1 process'].hp.link_gb_per_s} GB/s): {modelled:.2f} [modelled]")
        ratio = t["1 process"] / t[f"{stages} processes"]
        parallel = methods[f"{stages} processes"]
        slowdown = parallel.stage_seconds / split
        steps_run = (REPEATS + WARMUP) * steps  # every step since set-up, each placement
        step_ms = 1e3 * t[f"{stages} processes"] / steps
        critical_ms = 1e3 * parallel.critical_seconds / steps_run
        print(f"  {stages} processes: each stage's compute side by side / alone "
              + ", ".join(f"{float(x):.2f}" for x in slowdown)
              + f"; per step {step_ms:.0f} ms, of which the slowest stage's compute {critical_ms:.0f} ms "
              f"(the rest: the coordinator's work and the transfers)")
        ceiling, low, high = concurrency_ceiling(stages, batch)
        print(f"  bounds: machine concurrency ceiling {ceiling:.2f} [{low:.2f}–{high:.2f} over {CEILING_PAIRS} pairs] ({stages} "
              f"independent 1-thread processes / 1), stage balance {float(split.sum() / split.max()):.2f} "
              f"(1 / largest stage share)")
        report_ratio(f"penalty parallel phase: {stages} processes / 1 process throughput ({model_name})",
                     ratio, ">= 1.6", ratio >= 1.6, t.spread("1 process", f"{stages} processes"))
        for m in methods.values():
            m.close()
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    main(args.model, args.stages, args.steps, args.batch)
