"""Runs one cell: seed, build data/model/method, train for the budget, evaluate off the clock, log.

The harness knows no method by name. Only `train_step` and `end_epoch` are on the clock; every
method of a cell starts from the same weights (seeded by seed + model name) and sees the same
batches. A non-finite loss ends the run as `diverged` with its step; exceptions end it as
`failed`; Ctrl-C as `killed`. Nothing is logged before the inputs have been validated.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from suite import threads
from suite.checkpoint import save_checkpoint
from suite.config import Cell, RunConfig, resolve
from suite.data import DataBundle, build_data
from suite.measure import param_count, probe_step, process_peak_rss_mb
from suite.methods import METHODS, Context, Method
from suite.models import build_model
from suite.provenance import git_commit, hardware, package_versions
from suite.tracking import RunHandle, Tracker


@dataclass
class CellResult:
    cell: Cell
    status: str  # finished | skipped | diverged | failed | killed | cached (complete before) | busy
    run_id: str | None = None
    reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def init_seed(seed: int, model: str) -> int:
    return zlib.crc32(f"{seed}:{model}".encode())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from suite.errors import UsageError
        raise UsageError("device 'cuda' requested but no GPU is available; use device=auto or cpu")
    return torch.device(name)


def prepare(cfg: RunConfig, data_root=None):
    """Everything that can fail on bad input, before anything is logged."""
    device = pick_device(cfg.train.device)
    data = build_data(cfg.cell.dataset, cfg.train, device, data_root)
    torch.manual_seed(init_seed(cfg.cell.seed, cfg.cell.model))
    model = build_model(cfg.cell.model, data.input_shape, data.num_classes).to(device)
    if cfg.train.channels_last and len(data.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    method = METHODS[cfg.cell.method](cfg.hparams)
    method.validate(model)
    return device, data, model, method


def run_cell(cell: Cell, tracker: Tracker, *, data_root=None, progress: bool = False) -> CellResult:
    cfg = resolve(cell)
    if tracker.completed(cfg.cell_hash):
        return CellResult(cell, "cached")
    device, data, model, method = prepare(cfg, data_root)
    handle = tracker.claim(cfg.cell_hash, _tags(cfg, device), run_name=cell.label)
    if handle is None:
        return CellResult(cell, "busy" if tracker.completed(cfg.cell_hash) is None else "cached")
    handle.log_params(cfg.flat_params())
    handle.log_json("config.json", cfg.as_dict())
    try:
        reason = method.check(model, data)
        if reason:
            handle.finish("skipped", reason)
            return CellResult(cell, "skipped", handle.run_id, reason)
        status, reason, final = _train(cfg, method, model, data, handle, device, progress)
        handle.finish(status, reason)
        return CellResult(cell, status, handle.run_id, reason, final)
    except KeyboardInterrupt:
        handle.finish("killed", "interrupted")
        raise
    except Exception as err:
        handle.finish("failed", "".join(traceback.format_exception(err))[-4000:])
        return CellResult(cell, "failed", handle.run_id, f"{type(err).__name__}: {err}")
    finally:
        method.close()


def _tags(cfg: RunConfig, device: torch.device) -> dict[str, str]:
    tags = {"method": cfg.cell.method, "model": cfg.cell.model, "dataset": cfg.cell.dataset,
            "profile": cfg.cell.profile, "seed": str(cfg.cell.seed), "git_commit": git_commit(),
            "cell_label": cfg.cell.label, "device": str(device),
            "overrides": json.dumps(dict(cfg.cell.overrides), sort_keys=True)}
    tags |= {f"version.{k}": v for k, v in package_versions().items()}
    tags |= {f"hardware.{k}": v for k, v in hardware(device).items()}
    return tags


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(cfg: RunConfig, method: Method, model, data: DataBundle, handle: RunHandle, device,
           progress: bool) -> tuple[str, str | None, dict[str, float]]:
    seed, epochs = cfg.cell.seed, cfg.train.epochs
    ctx = Context(device=device, generator=torch.Generator().manual_seed(init_seed(seed, cfg.cell.method)),
                  seed=seed, epochs=epochs, steps_per_epoch=data.steps_per_epoch,
                  num_classes=data.num_classes, data=data, log_artifact=handle.log_text)
    method.setup(model, ctx)

    run_metrics = {"params": float(param_count(model)), "train_samples": float(len(data.train))}
    if cfg.train.measure_flops:
        run_metrics |= probe_step(method, next(data.train_batches(seed, 0)))
    handle.log_metrics(run_metrics)

    step, train_time, final = 0, 0.0, {}
    bar = tqdm(range(epochs), desc=cfg.cell.label, disable=not progress, leave=False)
    for epoch in bar:
        stats = train_epoch(method, data, seed, epoch, device, cfg.train.check_every, step)
        step += stats.steps
        if stats.diverged_step is not None:
            return _diverged(handle, stats.diverged_step, epoch)
        sums, seen, epoch_time = stats.sums, stats.seen, stats.seconds

        t0 = time.perf_counter()
        extra = method.end_epoch(epoch)
        _sync(device)
        epoch_time += time.perf_counter() - t0
        train_time += epoch_time

        metrics = {("train_acc" if k == "correct" else "train_" + k if k == "loss" else k): v.item() / seen
                   for k, v in sums.items()}
        metrics |= {k: float(v) for k, v in extra.items()}
        metrics |= {"epoch_time": epoch_time, "train_time": train_time, "images_per_s": seen / epoch_time,
                    "threads": float(torch.get_num_threads())}
        threads.apply()
        metrics |= evaluate(method, data, "test")
        if data.val is not None:
            metrics |= evaluate(method, data, "val")
        handle.log_metrics(metrics, step=epoch)
        bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", test_acc=f"{metrics['test_acc']:.3f}")
        final = metrics
    summary = {"peak_rss_mb": process_peak_rss_mb(), "steps": float(step)}
    if "flops_per_step" in run_metrics and step:
        summary["gflops_per_s"] = run_metrics["flops_per_step"] * step / train_time / 1e9
    if device.type == "cuda":
        summary["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    handle.log_metrics(summary, step=epochs)
    if cfg.train.save_checkpoint:
        with tempfile.TemporaryDirectory() as tmp:
            handle.log_artifact(save_checkpoint(model, Path(tmp) / "model.pt"))
    return "finished", None, final | summary


@dataclass
class EpochStats:
    sums: dict[str, torch.Tensor]
    seen: int
    seconds: float  # time inside train_step only
    steps: int
    diverged_step: int | None = None


def train_epoch(method: Method, data: DataBundle, seed: int, epoch: int, device, check_every: int,
                first_step: int = 0) -> EpochStats:
    """One pass over the epoch's batches; only `train_step` is timed. Losses are checked for
    non-finite values every `check_every` steps (one sync per window, not per step)."""
    sums: dict[str, torch.Tensor] = {}
    window: list[torch.Tensor] = []
    seconds, seen, steps = 0.0, 0, 0
    for batch in data.train_batches(seed, epoch):
        threads.apply()  # off the clock: a pool may hand this cell idle cores
        t0 = time.perf_counter()
        out = method.train_step(batch)
        _sync(device)
        seconds += time.perf_counter() - t0
        n = len(batch)
        seen += n
        for key, value in out.items():
            weight = 1 if key == "correct" else n  # means are weighted by batch size
            sums[key] = sums.get(key, 0) + value.detach() * weight
        window.append(out["loss"].detach())
        steps += 1
        if len(window) >= check_every or steps == data.steps_per_epoch:
            bad = _first_nonfinite(window)
            if bad is not None:
                return EpochStats(sums, seen, seconds, steps, first_step + steps - len(window) + bad)
            window = []
    return EpochStats(sums, seen, seconds, steps)


def _first_nonfinite(window: list[torch.Tensor]) -> int | None:
    finite = torch.isfinite(torch.stack(window))
    return None if bool(finite.all()) else int((~finite).nonzero()[0, 0])


def _diverged(handle: RunHandle, step: int, epoch: int):
    handle.log_metrics({"diverged_step": float(step)}, step=epoch)
    return "diverged", f"non-finite loss at step {step} (epoch {epoch})", {"diverged_step": float(step)}


@torch.no_grad()
def evaluate(method: Method, data: DataBundle, split: str) -> dict[str, float]:
    """Loss and accuracy of `method.predict` on a split, in eval mode, off the clock."""
    model = method.model
    was_training = model.training
    model.eval()
    loss, correct, n = 0.0, 0, 0
    for batch in data.eval_batches(split):
        logits = method.predict(batch.x)
        loss += torch.nn.functional.cross_entropy(logits, batch.y, reduction="sum").item()
        correct += int((logits.argmax(1) == batch.y).sum())
        n += len(batch)
    model.train(was_training)
    return {f"{split}_loss": loss / max(n, 1), f"{split}_acc": correct / max(n, 1)}
