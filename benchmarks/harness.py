"""Harness overhead, data pipeline throughput, and BP step efficiency (issue: the suite end to end).

1. ResNet-20 epoch through `harness.train_epoch` (the harness's own loop, with its stats and
   divergence checks) vs a minimal hand-written loop over the same batches: target <= 1.03.
2. Batches/s of the tensor pipeline vs torchvision's DataLoader with PIL transforms on the same
   CIFAR-shaped images (random crop 4 + flip + normalise): target >= 5.
3. Achieved GFLOP/s of a ResNet-20 BP step (FLOPs from torch.utils.flop_counter) / GFLOP/s of a
   large matmul measured in the same run: aim > 0.6.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from benchmarks.common import report_ratio, time_interleaved
from suite.data import DATASETS, DataBundle, Split
from suite.harness import train_epoch
from suite.methods import Context
from suite.methods.bp import BP
from suite.models import build_model

CIFAR = DATASETS["cifar10"]


def cifar_like(n: int, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                 torch.randint(0, 10, (n,), generator=gen))


def bundle(n: int, batch: int, augment: str = "crop-flip") -> DataBundle:
    split = cifar_like(n)
    return DataBundle(CIFAR, split, split, None, batch_size=batch, eval_batch_size=500, augment=augment,
                      device=torch.device("cpu"), channels_last=True)


def bp_method(data: DataBundle):
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10).to(memory_format=torch.channels_last)
    method = BP()
    method.setup(model, Context.for_data(data, epochs=10))
    return method


def harness_overhead(steps: int = 12) -> None:
    data = bundle(128 * steps, 128)
    harness_method, hand_method = bp_method(data), bp_method(data)
    model, opt = hand_method.model, hand_method.optim.opt

    def through_harness():
        train_epoch(harness_method, data, 0, 0, torch.device("cpu"), check_every=25)

    def hand_loop():
        for batch in data.train_batches(0, 0):
            loss = F.cross_entropy(model(batch.x), batch.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = time_interleaved({"harness": through_harness, "hand": hand_loop}, repeats=7)
    ratio = t["harness"] / t["hand"]
    report_ratio("harness epoch / hand-written loop (ResNet-20, same batches)", ratio, "<= 1.03", ratio <= 1.03,
                 t.spread("harness", "hand"))


class PILCifar(Dataset):
    def __init__(self, split: Split):
        self.images = split.images.permute(0, 2, 3, 1).numpy()
        self.labels = split.labels.numpy()
        self.tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(CIFAR.mean, CIFAR.std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.images[i])), int(self.labels[i])


def data_pipeline(n: int = 5120, batch: int = 128) -> None:
    data = bundle(n, batch)
    loader = DataLoader(PILCifar(data.train), batch_size=batch, shuffle=True, num_workers=0)

    def tensor_pipeline():
        for _ in data.train_batches(0, 0):
            pass

    def torchvision_loader():
        for _ in loader:
            pass

    t = time_interleaved({"tensor": tensor_pipeline, "loader": torchvision_loader}, repeats=3)
    ratio = t["loader"] / t["tensor"]
    print(f"  tensor pipeline {n / batch / t['tensor']:.0f} batches/s, DataLoader+PIL "
          f"{n / batch / t['loader']:.1f} batches/s")
    report_ratio("tensor pipeline batches/s / DataLoader+PIL batches/s", ratio, ">= 5", ratio >= 5)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def bp_efficiency(steps: int = 8) -> None:
    data = bundle(128 * steps, 128, augment="none")
    method = bp_method(data)
    batches = list(data.train_batches(0, 0))
    with FlopCounterMode(display=False) as counter:
        method.train_step(batches[0])
    flops = counter.get_total_flops()
    method.train_step(batches[1])
    t0 = time.perf_counter()
    for batch in batches:
        method.train_step(batch)
    step_s = (time.perf_counter() - t0) / len(batches)
    mm = matmul_gflops()
    achieved = flops / step_s / 1e9
    print(f"  ResNet-20 BP step {step_s * 1000:.0f} ms, {flops / 1e9:.1f} GFLOP -> {achieved:.0f} GFLOP/s; "
          f"matmul 2048² {mm:.0f} GFLOP/s")
    ratio = achieved / mm
    report_ratio("ResNet-20 BP step GFLOP/s / large-matmul GFLOP/s", ratio, "> 0.6", ratio > 0.6)


def main() -> None:
    harness_overhead()
    data_pipeline()
    bp_efficiency()


if __name__ == "__main__":
    main()
