"""Step time of the feedback-alignment family vs BP (issue: feedback alignment).

ResNet-20, batch 128, random 3×32×32 inputs, channels_last, one full training step (forward,
backward, SGD update), the candidates interleaved in one run:

  dfa / bp   target <= 0.85  (layer-granularity DFA runs no backward-data convolution)
  bdfa / bp  target <= 0.85  (the same, with the int8 ±1 feedback cast at each projection)
  fa / bp    ≈ 1.0 expected  (the same backward, through B instead of W; reported, no target)
  dfa(block) / bp           (BP inside blocks; for information)

On a GPU the same runs on CUDA (pass --device cuda or set BPSUITE_BENCH_DEVICE=cuda).
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks.common import report_ratio, time_interleaved
from suite.data import DATASETS, DataBundle, Split
from suite.methods import METHODS, Context
from suite.models import build_model


def bundle(batch: int, device: torch.device) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (batch, 3, 32, 32), generator=gen, dtype=torch.uint8),
                  torch.randint(0, 10, (batch,), generator=gen))
    return DataBundle(DATASETS["cifar10"], split, split, None, batch_size=batch, eval_batch_size=batch,
                      augment="none", device=device, channels_last=True)


def make(name: str, data: DataBundle, device: torch.device, **hp):
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).to(device).to(memory_format=torch.channels_last)
    cls = METHODS[name]
    method = cls(cls.HParams(**hp))
    method.setup(model, Context(device=device, generator=torch.Generator().manual_seed(0), seed=0, epochs=1000,
                                steps_per_epoch=1, num_classes=10, data=data))
    return method


# blocks of BLOCK consecutive steps per candidate, as training runs them (see benchmarks/biotorch.py
# for why the grouping matters), REPEATS blocks each: ≈ 15 s; with 7 single steps the ratios
# moved by ±0.03 between runs, as much as their distance from the target.
BLOCK, REPEATS = 3, 9


def main(device: str | None = None, repeats: int = REPEATS, batch_size: int = 128) -> None:
    device = torch.device(device or os.environ.get("BPSUITE_BENCH_DEVICE", "cpu"))
    data = bundle(batch_size, device)
    batch = next(data.train_batches(0, 0))
    methods = {"bp": make("bp", data, device), "dfa": make("dfa", data, device), "bdfa": make("bdfa", data, device),
               "fa": make("fa", data, device), "dfa-block": make("dfa", data, device, granularity="block")}

    def step(method):
        def fn():
            method.train_step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return fn

    t = time_interleaved({k: step(m) for k, m in methods.items()}, repeats=repeats, warmup=2, block=BLOCK)
    print(f"  ResNet-20, batch {batch_size}, 3×32×32, channels_last, {device}: " +
          ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t.items()))
    for name in ("dfa", "bdfa"):
        ratio = t[name] / t["bp"]
        report_ratio(f"{name} step / bp step (ResNet-20, batch {batch_size})", ratio, "<= 0.85", ratio <= 0.85,
                     t.spread(name, "bp"))
    ratio = t["fa"] / t["bp"]
    report_ratio(f"fa step / bp step (ResNet-20, batch {batch_size}; ≈1.0 expected)", ratio, "~1.0",
                 0.8 <= ratio <= 1.25, t.spread("fa", "bp"))
    print(f"  dfa (block granularity: BP inside blocks) / bp: {t['dfa-block'] / t['bp']:.3f}  (info)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    main(args.device, batch_size=args.batch)
