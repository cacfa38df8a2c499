"""Does BioTorch's own package collapse where the suite does? The first epoch of the BioTorch
MNIST setting (results/biotorch-mnist.md), the suite and BioTorch 0.0.16 side by side per seed.

In the committed paper grid one frSF seed ends at chance (its first epoch's mean training loss
was 170, then the loss sat at ln 10 for 99 epochs) and one uSF seed ends at 3.1% error against
0.85–0.88% for the others, both at lr 0.1, the rate of BioTorch's CIFAR-10 LeNet configs (the
MNIST rates are not published). Is that the setting or the suite's implementation? Both packages
here start from the same Xavier weights and (frSF) the same fixed feedback magnitudes and take the
same batches in the same order (the adapter of the side-by-side test, benchmarks/biotorch.py),
with the experiment's optimiser (SGD, momentum 0.9, weight decay 1e-3, batch 64) on the
experiment's 54k training images. For each seed it prints each side's first-epoch mean loss,
largest batch loss, and test accuracy after the epoch, and flags an epoch whose mean loss rose
above ln 10 (the uniform guess) as a blow-up. The seeds here seed the initial weights and the
batch order of this script; they are not the grid's runs, so the question answered is whether
the two packages blow up on the same seeds, not which grid seed would.

    python -m diagnostics.biotorch_first_epoch [--methods frsf,usf] [--seeds 6] [--lr 0.1]

Needs real MNIST ($BPSUITE_DATA) and biotorch (`pip install --no-deps biotorch==0.0.16`; nox's
environment has it). One thread; about 12 s per method, seed and side.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

from benchmarks.biotorch import Peer, peer_available, suite_method
from suite.config import TrainConfig
from suite.data import build_data
from suite.experiments.biotorch_mnist import COMMON, FIRST_EPOCH_COUNTS, LR
from suite.harness import evaluate

CHANCE_LOSS = math.log(10)


def first_epoch(name: str, data, lr: float, seed: int) -> dict[str, dict[str, float]]:
    ours = suite_method(name, data, lr, seed=seed, epochs=100)
    peer = Peer(name, ours, lr)
    losses: dict[str, list[float]] = {"suite": [], "biotorch": []}
    for batch in data.train_batches(seed, 0):
        losses["suite"].append(float(ours.train_step(batch)["loss"]))
        losses["biotorch"].append(peer.step(batch.x, batch.y))

    # the harness's own evaluation; the peer has the `model` and `predict` it reads
    acc = {side: evaluate(m, data, "test")["test_acc"] for side, m in (("suite", ours), ("biotorch", peer))}
    out = {}
    for side, values in losses.items():
        finite = [v for v in values if math.isfinite(v)]
        mean = sum(values) / len(values)
        out[side] = {"mean": mean, "max": max(finite) if finite else math.nan, "acc": acc[side],
                     "blowup": not math.isfinite(mean) or mean > CHANCE_LOSS}
    return out


def main(methods: list[str], seeds: int, lr: float | None) -> None:
    if not peer_available():
        raise SystemExit("biotorch is not installed: pip install --no-deps biotorch==0.0.16")
    warnings.filterwarnings("ignore", message=".*non-full backward hook.*")
    torch.set_num_threads(1)  # both packages' kernels sum in the same order, as in the peer test
    cfg = TrainConfig(batch_size=COMMON["batch_size"], val_fraction=COMMON["val_fraction"], probe_samples=0,
                      augment="none", eval_batch_size=1000)
    data = build_data("mnist", cfg, torch.device("cpu"))
    print(f"MNIST, {len(data.train)} training images, batch {cfg.batch_size}, one epoch, SGD momentum 0.9, "
          f"weight decay 1e-3, Xavier init, 1 thread; blow-up = epoch-mean loss above ln 10 = {CHANCE_LOSS:.2f}")
    for name in methods:
        rate = lr if lr is not None else LR[name]
        counts = {"suite": 0, "biotorch": 0}
        for seed in range(seeds):
            t0 = time.perf_counter()
            r = first_epoch(name, data, rate, seed)
            for side in counts:
                counts[side] += r[side]["blowup"]
            cells = "   ".join(f"{side} mean {v['mean']:9.3g} max {v['max']:9.3g} acc {100 * v['acc']:5.1f}%"
                               f"{' BLOW-UP' if v['blowup'] else ''}" for side, v in r.items())
            print(f"  {name} lr {rate:g} seed {seed}: {cells}   ({time.perf_counter() - t0:.0f} s)", flush=True)
        print("  " + FIRST_EPOCH_COUNTS.format(method=name, suite=counts["suite"], peer=counts["biotorch"],
                                               seeds=seeds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="frsf,usf")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--lr", type=float, default=None, help="default: the experiment's rate per method")
    args = parser.parse_args()
    main(args.methods.split(","), args.seeds, args.lr)
