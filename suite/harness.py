"""Runs one cell: seed, build data/model/method, train for the budget, evaluate off the clock, log.

The harness knows no method by name. Timing contract: `train_step` and `end_epoch` are training
work and on the clock (`epoch_time`, summed into `train_time`, the end-to-end figure every speed
column uses); `diagnostics` and evaluation are off it (`diag_time` records what the diagnostics
cost). Methods with phases name each epoch's phase, and its training time is summed per phase
(`phase_time.<name>`, `phase_epochs.<name>`).

Every method of a cell starts from the same weights (seeded by seed + model name), sees the same
batches and runs with the same, fixed intra-op thread count (`threads`). A loss that is
non-finite or grows past the divergence bound ends the run as `diverged` with its step;
exceptions end it as `failed`; Ctrl-C as `killed`. Nothing is logged before every setting has
been validated, and the method only ever sees the training view of the data (no test split).
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from suite.checkpoint import save_checkpoint
from suite.config import Cell, RunConfig, resolve
from suite.data import DataBundle, build_data
from suite.measure import param_count, probe_step, process_peak_rss_mb
from suite.methods import METHODS, Context, Method
from suite.metrics import undeclared
from suite.models import build_model
from suite.models.init import initialise
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
    # a size the data cannot give is an error naming the limit (suite/data/__init__.py); the
    # settings the cell names itself are requests, the rest (defaults, profile) may be caps
    data = build_data(cfg.cell.dataset, cfg.train, device, data_root,
                      requested={key for key, _ in cfg.cell.overrides}, seed=cfg.cell.seed)
    torch.manual_seed(init_seed(cfg.cell.seed, cfg.cell.model))
    model = initialise(build_model(cfg.cell.model, data.input_shape, data.num_classes), cfg.train.init).to(device)
    if cfg.train.channels_last and len(data.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    method = METHODS[cfg.cell.method](cfg.hparams)
    method.reject_settings(model, cfg.train, device)
    return device, data, model, method


class fixed_threads:
    """The run's intra-op thread count for the life of the run, whatever the caller had."""

    def __init__(self, n: int):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def run_cell(cell: Cell, tracker: Tracker, *, data_root=None, progress: bool = False,
             on_epoch: Callable[[int, int, dict[str, float]], None] | None = None) -> CellResult:
    """`on_epoch(epoch, epochs, metrics)` is called after each epoch's metrics are logged (the
    command line prints a line per epoch with it)."""
    cfg = resolve(cell)
    if tracker.completed(cfg.cell_hash):
        return CellResult(cell, "cached")
    with fixed_threads(cfg.train.threads):
        return _run_claimed(cell, cfg, tracker, data_root, progress, on_epoch)


def _run_claimed(cell: Cell, cfg: RunConfig, tracker: Tracker, data_root, progress: bool, on_epoch) -> CellResult:
    device, data, model, method = prepare(cfg, data_root)
    handle = tracker.claim(cfg.cell_hash, _tags(cfg, device), run_name=cell.run_name())
    if handle is None:
        return CellResult(cell, "busy" if tracker.completed(cfg.cell_hash) is None else "cached")
    handle.log_params(cfg.flat_params())
    handle.log_json("config.json", cfg.as_dict())
    if data.notes:  # a size cap that bound (suite.data's rule): the run says what it used
        handle.set_tags({f"data_note.{i}": note for i, note in enumerate(data.notes)})
    try:
        reason = method.skip_reason(model, data.training_view())
        if reason:
            handle.finish("skipped", reason)
            return CellResult(cell, "skipped", handle.run_id, reason)
        status, reason, final = _train(cfg, method, model, data, handle, device, progress, on_epoch)
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
    # MLflow's own source tags, so its UI's Source and Version columns show the code
    tags |= {"mlflow.source.name": "bpsuite", "mlflow.source.type": "LOCAL",
             "mlflow.source.git.commit": tags["git_commit"].removesuffix("-dirty")}
    tags |= {f"version.{k}": v for k, v in package_versions().items()}
    tags |= {f"hardware.{k}": v for k, v in hardware(device).items()}
    return tags


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train(cfg: RunConfig, method: Method, model, data: DataBundle, handle: RunHandle, device,
           progress: bool, on_epoch=None) -> tuple[str, str | None, dict[str, float]]:
    seed, epochs = cfg.cell.seed, cfg.train.epochs
    ctx = Context(device=device, generator=torch.Generator().manual_seed(init_seed(seed, cfg.cell.method)),
                  seed=seed, epochs=epochs, steps_per_epoch=data.steps_per_epoch,
                  num_classes=data.num_classes, data=data.training_view(), log_artifact=handle.log_text)
    method.setup(model, ctx)

    run_metrics = {"params": float(param_count(model)), "train_samples": float(len(data.train))}
    if cfg.train.measure_flops:
        run_metrics |= probe_step(method, next(data.train_batches(seed, 0)))
    handle.log_metrics(run_metrics)

    step, train_time, diag_time, final = 0, 0.0, 0.0, {}
    phase_time: dict[str, float] = {}
    phase_epochs: dict[str, int] = {}
    monitor = DivergenceMonitor(cfg.train.diverge_factor)
    bar = tqdm(range(epochs), desc=cfg.cell.label, disable=not progress, leave=False)
    for epoch in bar:
        phase = method.phase(epoch)  # asked before the epoch: end_epoch may switch phases
        stats = train_epoch(method, data, seed, epoch, device, cfg.train.check_every, step, monitor)
        step += stats.steps
        if stats.diverged_step is not None:
            return _diverged(handle, stats.diverged_step, epoch, monitor)
        sums, seen, epoch_time = stats.sums, stats.seen, stats.seconds

        t0 = time.perf_counter()
        extra = method.end_epoch(epoch)
        _sync(device)
        epoch_time += time.perf_counter() - t0
        train_time += epoch_time

        t0 = time.perf_counter()
        extra = extra | method.diagnostics(epoch)
        _sync(device)
        diag_time += time.perf_counter() - t0

        metrics = {("train_acc" if k == "correct" else "train_" + k if k == "loss" else k): v.item() / seen
                   for k, v in sums.items()}
        metrics |= {k: float(v) for k, v in extra.items()}
        metrics |= {"epoch_time": epoch_time, "train_time": train_time, "images_per_s": seen / epoch_time,
                    "diag_time": diag_time}
        if phase is not None:
            phase_time[phase] = phase_time.get(phase, 0.0) + epoch_time
            phase_epochs[phase] = phase_epochs.get(phase, 0) + 1
            metrics |= {f"phase_time.{phase}": phase_time[phase], f"phase_epochs.{phase}": float(phase_epochs[phase])}
        if cfg.train.eval_test:
            metrics |= evaluate(method, data, "test")
        if data.val is not None:
            metrics |= evaluate(method, data, "val")
        check_declared(method, metrics)
        handle.log_metrics(metrics, step=epoch)
        if on_epoch is not None:
            on_epoch(epoch, epochs, metrics)
        bar.set_postfix(loss=f"{metrics['train_loss']:.3f}",
                        **{k: f"{metrics[k]:.3f}" for k in ("test_acc", "val_acc") if k in metrics})
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


def check_declared(method: Method, metrics: dict) -> None:
    """Every logged key must be declared (suite/metrics.py): by the harness or in the method's
    METRICS. An undeclared key is a bug in the method, caught by the conformance tests."""
    missing = undeclared(metrics, type(method).declared_metrics())
    if missing:
        raise ValueError(f"{method.name} logged undeclared metric(s) {', '.join(missing)}; declare them in "
                         f"{type(method).__name__}.METRICS (suite/metrics.py)")


class DivergenceMonitor:
    """Decides when a run has diverged, one check window (`check_every` steps) at a time.

    Rule (a suite rule, not a paper's): a loss that is not finite diverges at once; otherwise the
    reference is the median training loss of the run's first window, and a window whose mean loss
    exceeds `factor` × reference diverges at its first step above that bound. A healthy run starts
    near ln(classes) and falls; a factor of 10 flags the blow-ups (losses of 1e3–1e10 within a few
    hundred steps) that would otherwise end as "finished" at chance accuracy. factor 0 checks only
    for non-finite losses.
    """

    def __init__(self, factor: float):
        self.factor = factor
        self.reference: float | None = None

    def first_bad(self, window: list[torch.Tensor]) -> int | None:
        losses = torch.stack(window).double()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            return int((~finite).nonzero()[0, 0])
        if not self.factor:
            return None
        if self.reference is None:
            self.reference = float(losses.median())
        bound = self.factor * self.reference
        if float(losses.mean()) > bound:
            return int((losses > bound).nonzero()[0, 0])
        return None

    def describe(self, step: int) -> str:
        if self.reference is None or not self.factor:
            return f"non-finite loss at step {step}"
        return (f"loss non-finite or above {self.factor:g}× the first window's median "
                f"({self.reference:.3g}) at step {step}")


@dataclass
class EpochStats:
    sums: dict[str, torch.Tensor]
    seen: int
    seconds: float  # time inside train_step only
    steps: int
    diverged_step: int | None = None


def train_epoch(method: Method, data, seed: int, epoch: int, device, check_every: int,
                first_step: int = 0, monitor: DivergenceMonitor | None = None) -> EpochStats:
    """One pass over the epoch's batches; only `train_step` is timed. Losses are checked every
    `check_every` steps (one sync per window, not per step)."""
    monitor = monitor or DivergenceMonitor(0.0)
    sums: dict[str, torch.Tensor] = {}
    window: list[torch.Tensor] = []
    seconds, seen, steps = 0.0, 0, 0
    for batch in data.train_batches(seed, epoch):
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
            bad = monitor.first_bad(window)
            if bad is not None:
                return EpochStats(sums, seen, seconds, steps, first_step + steps - len(window) + bad)
            window = []
    return EpochStats(sums, seen, seconds, steps)


def _diverged(handle: RunHandle, step: int, epoch: int, monitor: DivergenceMonitor):
    handle.log_metrics({"diverged_step": float(step)}, step=epoch)
    return "diverged", f"{monitor.describe(step)} (epoch {epoch})", {"diverged_step": float(step)}


@torch.no_grad()
def evaluate(method: Method, data: DataBundle, split: str) -> dict[str, float]:
    """Loss and accuracy of `method.predict` on a split, in eval mode, off the clock. The harness
    holds the whole `DataBundle`; this is the only place the test split is read."""
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
