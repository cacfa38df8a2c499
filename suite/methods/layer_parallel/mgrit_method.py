"""`mgrit`: layer-parallel training by multigrid in the layer dimension (Günther, Ruthotto,
Schroder, Cyr, Gauger 2020, SIMODS 2(1), arXiv 1812.04352), as in TorchBraid
(github.com/Multilevel-NN/torchbraid). The solver and every algorithmic choice are in
`mgrit.py`; docs/mgrit.md lists them with their sources ([C] seen in TorchBraid's or the
authors' code, [R] this suite's choice, [NF] not found in the available text).

One training step: stem serially → each maximal run of ≥ 2 consecutive ODE-form blocks by
`fwd_iters` MGRIT iterations → the other blocks and the head serially → cross-entropy → backward,
in which autograd meets each run's MGRIT adjoint (`bwd_iters` iterations at the inexact forward
states) → optimiser step. Choices and their standing:

* the "simultaneous"/one-shot variant with inexact gradients is the default, fwd_iters = 2,
  bwd_iters = 1, cfactor 4, 3 levels: TorchBraid's MNIST example [C]; the paper's own iteration
  counts, N and levels are [NF]. `tol` > 0 gives the "layer-parallel gradient" variant (solves to
  a relative residual, at most `max_iters` iterations) [R: the paper's tolerances NF].
* F-relaxation on the finest level, FCF on coarser ones (nrelax0 = 0, nrelax = 1) [C].
* initial guess: the run's input copied to every point, for the state and (the output gradient)
  for the adjoint [R]; `warm_start` starts each solve from the previous step's states instead,
  and `skip_downcycle` does no work on the first cycle's way down — TorchBraid's two options
  (its example runs with both on) [C]; both are off by default.
* optimiser: SGD/Adam with the same recipe and defaults as `bp`, so the two differ only in how the
  gradient is computed; the paper used full-batch L-BFGS with line search, TorchBraid's example
  SGD lr 0.01, momentum 0.9 [C] — set those through the hparams when reproducing it.
* no Tikhonov or ddt (smoothness-in-layer) regularisation terms: weight decay only [R: the
  authors' code has both, with weights ≈ 1e-7..1e-5 [C]].
* predict() is the exact serial forward (the Method default).
* `workers` = P ≥ 2 runs the layer chunks in P processes (mgrit_team.py, mgrit_placement.py):
  the same solver code on every rank, each rank owning a contiguous chunk of layers; the epoch
  time is then *measured* with P processes. The `modelled_speedup_p*` figures are the critical
  path of layer evaluations with P workers and no communication, for any P.
* convergence probe [R]: after each epoch, in `diagnostics` (off the training clock),
  `probe_iters` forward and adjoint MGRIT iterations from a cold start on a fixed batch of the
  probe split (else the validation split) at the current weights, logged as the relative
  residual per iteration (the paper's residual-vs-iteration figure). It changes no weight or
  gradient and leaves the warm-start states alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from suite.errors import UsageError
from suite.methods.base import Method
from suite.methods.layer_parallel.mgrit import (
    Iterations,
    LocalTeam,
    MgritConfig,
    RunTrace,
    mgrit_run,
)
from suite.methods.layer_parallel.mgrit_team import ProcessTeam
from suite.methods.optim import OptimHParams
from suite.metrics import measured, modelled
from suite.params import param

FWD_RESIDUAL = measured("mgrit/fwd_residual", "1", "forward solve's last-iteration residual norm, epoch mean",
                        was="mgrit_fwd_residual")
ADJ_RESIDUAL = measured("mgrit/adj_residual", "1", "adjoint solve's last-iteration residual norm, epoch mean",
                        was="mgrit_adj_residual")
FWD_ITERS = measured("mgrit/fwd_iters", "1", "forward MGRIT iterations per step, epoch mean", was="mgrit_fwd_iters")
ADJ_ITERS = measured("mgrit/adj_iters", "1", "adjoint MGRIT iterations per step, epoch mean", was="mgrit_adj_iters")
PROBE_RES0 = measured("mgrit/probe_{solve}_res0", "1", "probe batch: initial residual norm of the fwd/adj solve",
                      was="mgrit_probe_{solve}_res0")
PROBE_REL = measured("mgrit/probe_{solve}_rel_it{k}", "1", "probe batch: residual after iteration k / initial",
                     was="mgrit_probe_{solve}_rel_it{k}")
SPEEDUP_P = modelled("mgrit/modelled_speedup_p{p}", "×", "layer-serial cost / MGRIT critical-path cost on P "
                                                         "workers, from counted block applications",
                     was="modelled_speedup_p{p}")
SPEEDUP = modelled("mgrit/modelled_speedup", "×", "mgrit/modelled_speedup_p{p} at the default worker count",
                   was="modelled_speedup")
WORKERS = modelled("mgrit/modelled_workers", "1", "the default worker count P = N / coarsening factor",
                   was="modelled_workers")


@dataclass(frozen=True)
class MgritHParams(OptimHParams):
    cfactor: int = param(4, "coarsening factor c between MGRIT levels [C: TorchBraid example]", low=2)
    max_levels: int = param(3, "most MGRIT levels (1 = the serial forward and backward exactly) [C]", low=1)
    fwd_iters: int = param(2, "MGRIT iterations for the forward states per step (when tol = 0) [C]", low=1)
    bwd_iters: int = param(1, "MGRIT iterations for the adjoint per step (when tol = 0) [C]", low=1)
    tol: float = param(0.0, "0: fixed iteration counts (one-shot, inexact gradient); > 0: iterate each solve "
                       "until ‖r_k‖ ≤ tol·‖r_0‖ [R]", low=0.0)
    max_iters: int = param(50, "cap on iterations per solve when tol > 0", low=1)
    skip_downcycle: bool = param(False, "no work on the first V-cycle's way down (XBraid's skip; TorchBraid's "
                                 "default): the coarsest level solves from u_0, then up as usual [C]")
    warm_start: bool = param(False, "start each training solve (forward and adjoint) from the previous step's "
                             "states (XBraid's warm restart, as TorchBraid reuses its solver) [C]")
    probe_iters: int = param(8, "end-of-epoch convergence probe: MGRIT iterations of the forward and adjoint "
                             "solves on a fixed batch (diagnostic only, off the clock; 0 = off) [R]", low=0)
    probe_batch: int = param(64, "samples in the probe's fixed batch (probe split, else validation split)", low=1)
    workers: int = param(1, "processes the layer chunks run in: 1 = this process; P ≥ 2 spawns P−1 workers "
                         "(torch.distributed, gloo), each owning a contiguous chunk of every ODE run", low=1)


class Mgrit(Method):
    name = "mgrit"
    HParams = MgritHParams
    METRICS = (FWD_RESIDUAL, ADJ_RESIDUAL, FWD_ITERS, ADJ_ITERS, PROBE_RES0, PROBE_REL, SPEEDUP_P, SPEEDUP, WORKERS)
    summary = "layer-parallel training: MGRIT forward and adjoint through ODE-form residual runs"
    source = "Günther et al. 2020 (SIMODS, arXiv 1812.04352); TorchBraid defaults; see docs/mgrit.md"
    # the adjoint's autograd.grad inside a custom backward fails under FlopCounterMode's module hooks
    flop_probe = False

    @classmethod
    def workers(cls, hparams) -> int:
        return hparams.workers

    @classmethod
    def relative_cost(cls, hparams) -> float:
        """≈ 1 + the solves' iterations (quick run: 2.7× bp for 1+1, 3.4× for 2+1, 6.8× for tol 1e-6,
        which took 4+4 iterations); a tolerance is counted as 4 + 4."""
        return 1.0 + (8 if hparams.tol > 0 else hparams.fwd_iters + hparams.bwd_iters)

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.team = None  # where the runs' layers live: this process, or worker processes (`setup`)

    def reject_settings(self, model, run, device):
        if self.hp.workers > 1 and device.type != "cpu":
            raise UsageError("MGRIT worker processes are implemented for CPU (gloo); run on CPU or set workers=1")
        runs = model.ode_runs()
        if self.hp.workers > 1 and runs:
            intervals = min(-(-len(run) // self.hp.cfactor) for run in runs)
            if self.hp.workers > intervals:
                raise UsageError(f"workers={self.hp.workers} is more than the {intervals} coarse intervals "
                                 f"(⌈N/cfactor⌉) of the shortest ODE run; choose workers ≤ {intervals}")

    def skip_reason(self, model, data):
        if not model.ode_runs():
            name = model.name or type(model).__name__
            return f"mgrit needs runs of ≥ 2 consecutive ODE-form residual blocks (odenet); {name} has none"
        return None

    def setup(self, model, ctx):
        super().setup(model, ctx)
        self.optim = self.make_optimiser()
        self.config = MgritConfig(cfactor=self.hp.cfactor, max_levels=self.hp.max_levels,
                                  skip_downcycle=self.hp.skip_downcycle)
        self.fwd = Iterations(self.hp.fwd_iters, self.hp.tol, self.hp.max_iters)
        self.bwd = Iterations(self.hp.bwd_iters, self.hp.tol, self.hp.max_iters)
        runs = model.ode_runs()
        self.run_starts = {run[0]: (r, run) for r, run in enumerate(runs)}
        self.team = (ProcessTeam([[model.blocks[j] for j in run] for run in runs], self.config, self.hp.workers)
                     if self.hp.workers > 1 else LocalTeam(self.config))
        longest = max(len(run) for run in runs)
        self.default_workers = max(1, longest // self.hp.cfactor)  # one per finest coarse interval
        self.workers_modelled = sorted({self.default_workers} | {2 ** k for k in range(longest.bit_length())})
        self.probe_data = probe_batch(ctx.data, self.hp.probe_batch) if self.hp.probe_iters else None
        self._reset_cost()

    def _reset_cost(self):
        self.cost = dict.fromkeys(self.workers_modelled, 0)
        self.serial_cost = 0

    def forward_with_mgrit(self, x: torch.Tensor, traces: list[RunTrace]) -> torch.Tensor:
        return self.model.head(self._blocks(self.model.stem(x), traces, self.fwd, self.bwd, self.hp.warm_start))

    def _blocks(self, x: torch.Tensor, traces: list[RunTrace], fwd: Iterations, bwd: Iterations,
                warm: bool) -> torch.Tensor:
        blocks, i = self.model.blocks, 0
        while i < len(blocks):
            r, run = self.run_starts.get(i, (None, None))
            if run is None:
                x, i = blocks[i](x), i + 1
                continue
            traces.append(RunTrace())
            x = mgrit_run([blocks[j] for j in run], x, self.config, fwd, bwd, traces[-1], self.team, r, warm)
            i = run[-1] + 1
        return x

    def train_step(self, batch):
        self.model.train()
        traces: list[RunTrace] = []
        logits = self.forward_with_mgrit(batch.x, traces)
        loss = self.loss_fn(logits, batch.y)
        self.optim.step(loss)
        return self.step_stats(logits, batch.y, loss) | self._diagnostics(traces)

    def _diagnostics(self, traces: list[RunTrace]) -> dict[str, torch.Tensor]:
        """Last-iteration residual norms (all runs together) and iteration counts of this step; the
        harness logs their epoch means."""
        out = {
            FWD_RESIDUAL.key: _combined([t.forward.residuals[-1] for t in traces]),
            ADJ_RESIDUAL.key: _combined([t.adjoint.residuals[-1] for t in traces]),
            FWD_ITERS.key: torch.tensor(float(max(t.forward.iterations for t in traces))),
            ADJ_ITERS.key: torch.tensor(float(max(t.adjoint.iterations for t in traces))),
        }
        for p in self.cost:
            self.cost[p] += sum(t.modelled_cost(p) for t in traces)
        self.serial_cost += sum(t.serial_cost for t in traces)
        return out

    def probe(self) -> dict[str, float]:
        """Residual history of `probe_iters` forward and adjoint iterations on the fixed batch at the
        current weights: ‖r_k‖/‖r_0‖ per iteration k ≥ 1 (all runs together) and ‖r_0‖. Eval mode,
        and autograd.grad to the stem's output only, so no parameter's .grad is touched."""
        x, y = self.probe_data
        until = Iterations(self.hp.probe_iters)
        traces: list[RunTrace] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                start = self.model.stem(x)
            start.requires_grad_()
            loss = self.loss_fn(self.model.head(self._blocks(start, traces, until, until, warm=False)), y)
            torch.autograd.grad(loss, start)  # runs each run's adjoint solve
        finally:
            self.model.train(was_training)
        out = {}
        for solve in ("fwd", "adj"):
            history = [getattr(t, "forward" if solve == "fwd" else "adjoint").residuals for t in traces]
            norms = [float(_combined(list(step))) for step in zip(*history)]
            out[PROBE_RES0.name(solve=solve)] = norms[0]
            out |= {PROBE_REL.name(solve=solve, k=k): r / norms[0] if norms[0] else 0.0
                    for k, r in enumerate(norms[1:], start=1)}
        return out

    def end_epoch(self, epoch):
        """Modelled speedup of the runs' forward + backward over layer-serial BP, with P workers
        (powers of two and the default P = N/c), for this epoch's steps."""
        metrics = {}
        if self.serial_cost:
            metrics = {SPEEDUP_P.name(p=p): self.serial_cost / cost for p, cost in self.cost.items()}
            metrics |= {SPEEDUP.key: metrics[SPEEDUP_P.name(p=self.default_workers)],
                        WORKERS.key: float(self.default_workers)}
        self._reset_cost()
        return metrics

    def diagnostics(self, epoch):
        """The convergence probe (off the training clock)."""
        return self.probe() if self.probe_data is not None else {}

    def close(self):
        if self.team is not None:
            self.team.close()


def probe_batch(data, samples: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first `samples` examples of the probe split (the validation split when there is no
    probe split); None when neither exists."""
    for split in ("probe", "val"):
        xs, ys, n = [], [], 0
        for batch in data.eval_batches(split):
            xs.append(batch.x)
            ys.append(batch.y)
            n += len(batch.y)
            if n >= samples:
                break
        if xs:
            return torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    return None


def _combined(norms: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(norms).pow(2).sum().sqrt().float()
