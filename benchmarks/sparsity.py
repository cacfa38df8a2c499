"""Cost of the bp-sparsity instrumentation (issue: gradient output sparsity).

1. ResNet-20 epoch (100 steps, batch 64, random 3×32×32) of `bp-sparsity` at its default sampling
   (every 50th step and the first of each epoch, i.e. 2 instrumented steps per epoch) vs plain
   `bp`, through the harness's own epoch loop, interleaved: target <= 1.10.
2. For information: one instrumented step / one plain step (the price of a sampled step).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import report_ratio, time_interleaved
from suite.data import DATASETS, DataBundle, Split
from suite.harness import train_epoch
from suite.methods import Context
from suite.methods.bp import BP
from suite.methods.sparsity import BPSparsity, BPSparsityHParams
from suite.models import build_model


def bundle(steps: int, batch: int) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    n = steps * batch
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                  torch.randint(0, 10, (n,), generator=gen))
    return DataBundle(DATASETS["cifar10"], split, split, None, batch_size=batch, eval_batch_size=500,
                      augment="none", device=torch.device("cpu"), channels_last=True)


def setup(method, data: DataBundle):
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).to(memory_format=torch.channels_last)
    method.setup(model, Context.for_data(data, epochs=100))
    return method


def epoch_overhead(steps: int = 100, batch: int = 64) -> None:
    data = bundle(steps, batch)
    plain, probed = setup(BP(), data), setup(BPSparsity(), data)
    epochs = {"bp": 0, "bp-sparsity": 0}

    def run(name, method):
        def fn():
            train_epoch(method, data, 0, epochs[name], torch.device("cpu"), check_every=25)
            method.end_epoch(epochs[name])
            epochs[name] += 1
        return fn

    t = time_interleaved({"bp": run("bp", plain), "bp-sparsity": run("bp-sparsity", probed)}, repeats=3, warmup=0)
    ratio = t["bp-sparsity"] / t["bp"]
    print(f"  ResNet-20, {steps} steps × batch {batch}: bp {t['bp']:.2f} s/epoch, bp-sparsity {t['bp-sparsity']:.2f} "
          f"s/epoch (sample_every={BPSparsityHParams().sample_every}: 2 instrumented steps per epoch)")
    report_ratio("bp-sparsity epoch / bp epoch (default sampling, ResNet-20)", ratio, "<= 1.10", ratio <= 1.10)


def sampled_step_cost(batch: int = 64, repeats: int = 5) -> None:
    data = bundle(repeats + 1, batch)
    batches = list(data.train_batches(0, 0))
    plain = setup(BP(), data)
    probed = setup(BPSparsity(BPSparsityHParams(sample_every=1)), data)
    times = {"bp": [], "probed": []}
    for b in batches:
        for name, method in (("bp", plain), ("probed", probed)):
            t0 = time.perf_counter()
            method.train_step(b)
            times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}
    print(f"  one instrumented step / one plain step (counting included): {med['probed'] / med['bp']:.2f}  (info)")


def main() -> None:
    epoch_overhead()
    sampled_step_cost()


if __name__ == "__main__":
    main()
