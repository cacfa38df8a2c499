"""Speed and memory of LoCal+SGD's localized prefix (issue: localized learning, `local`).

1. ResNet-20 training epoch (20 steps of batch 128, random 3×32×32) with half of its layers
   localized (c1 = 0.5 → the first 10 of 22 layers: stem + 4 blocks, rounded down to a block
   boundary) vs BP, through the harness's own epoch loop, interleaved: target <= 0.75.
2. Memory of one training step, both methods: bytes autograd saves for backward (distinct
   storages, `suite.measure.saved_tensor_bytes`) and, on a GPU, the peak allocated memory.

`python -m benchmarks.local [--device cuda] [--model resnet18]` for other settings.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import report_ratio, time_interleaved
from suite.data import DATASETS, DataBundle, Split
from suite.harness import train_epoch
from suite.measure import saved_tensor_bytes
from suite.methods import Context
from suite.methods.bp import BP
from suite.methods.local import LocalHParams, LocalSGD
from suite.models import build_model

HALF = LocalHParams(local_schedule="linear", c1=0.5, c2=0.0)  # p = 1 from the first epoch of a 1-epoch run


def bundle(steps: int, batch: int, device: torch.device) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    n = steps * batch
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                  torch.randint(0, 10, (n,), generator=gen))
    return DataBundle(DATASETS["cifar10"], split, split, None, batch_size=batch, eval_batch_size=500,
                      augment="none", device=device, channels_last=True)


def setup(method, data: DataBundle, model_name: str):
    torch.manual_seed(0)
    model = build_model(model_name, (3, 32, 32), 10).to(data.device, memory_format=torch.channels_last)
    method.setup(model, Context.for_data(data, epochs=1))
    return method


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_memory(method, batch, device: torch.device) -> dict[str, float]:
    hooks, seen = saved_tensor_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with hooks:
        method.train_step(batch)
    _sync(device)
    out = {"saved_mb": sum(seen.values()) / 2**20}
    if device.type == "cuda":
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def main(model_name: str = "resnet20", device: str = "cpu", steps: int = 20, batch: int = 128) -> None:
    dev = torch.device(device)
    data = bundle(steps, batch, dev)
    bp, local = setup(BP(), data, model_name), setup(LocalSGD(HALF), data, model_name)
    n_layers = len(local.layers)
    print(f"  {model_name}: {local.transition_layer} of {n_layers} layers local "
          f"({local.cut.units} units: stem + {local.cut.units - 1} blocks), {steps} steps × batch {batch}, {dev}")
    epochs = {"bp": 0, "local": 0}

    def run(name, method):
        def fn():
            train_epoch(method, data, 0, epochs[name], dev, check_every=25)
            method.end_epoch(epochs[name])
            _sync(dev)
            epochs[name] += 1
        return fn

    t = time_interleaved({"bp": run("bp", bp), "local": run("local", local)}, repeats=5, warmup=1)
    ratio = t["local"] / t["bp"]
    print(f"  bp {t['bp']:.2f} s/epoch, local {t['local']:.2f} s/epoch")
    report_ratio(f"local epoch / bp epoch ({local.transition_layer}/{n_layers} layers local, {model_name})",
                 ratio, "<= 0.75", ratio <= 0.75, t.spread("local", "bp"))

    batch0 = next(data.train_batches(0, 0))
    mem = {"bp": step_memory(bp, batch0, dev), "local": step_memory(local, batch0, dev)}
    for name, values in mem.items():
        print(f"  {name:>5s}: " + ", ".join(f"{k} {v:.1f}" for k, v in values.items()))
    saved = mem["local"]["saved_mb"] / mem["bp"]["saved_mb"]
    report_ratio("local / bp: bytes saved for backward, one step", saved, "< 1", saved < 1)
    if "peak_mb" in mem["bp"]:
        peak = mem["local"]["peak_mb"] / mem["bp"]["peak_mb"]
        report_ratio("local / bp: peak GPU memory of one step", peak, "< 1", peak < 1)
    bp.close()
    local.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    main(args.model, args.device, args.steps, args.batch)
