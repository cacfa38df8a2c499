"""`penalty` and `augmented-lagrangian`: layer-parallel training with auxiliary variables, the
serial-parallel hybrid (SPH) and downsampling (DS) filters (Sun et al., arXiv 2009.01462 v2/v3).
Only the paper's abstract was available, so the formulation below is the standard one for this
family of auxiliary-variable methods; what the text does not give is marked [R] (reconstructed)
or [NF] (not found) and listed in docs/layer-parallel.md.

One outer iteration = one training step on a batch of sample indices:

1. parallel phase: every stage k steps its own sub-problem at once (`StageSolver`), on the
   *un-augmented* images (the λ are tied to exact inputs, the data-augmentation problem the paper
   names); each auxiliary variable then takes a preconditioned gradient step [R] (`aux_update`):
       λ_k ← λ_k + a·[ r_k + μ_k/β − (d_k/β)·∂J_{k+1}/∂λ_k ],   r_k = D(F_k(R(λ_{k−1}))) − λ_k
   All stages see the previous iterate (Jacobi), which is what makes them parallel.
2. augmented Lagrangian only: μ_k ← μ_k + β·(D(F_k(R(λ_{k−1}))) − λ_k), with the updated λ_k.
3. serial correction (SPH): the last `serial_share` of the epochs are ordinary end-to-end BP on
   augmented data through the whole network [R: the text says "first ... then", the share is NF].
   One learning-rate schedule spans the whole run: the stages' optimisers follow its first part
   and the serial optimiser continues it at the step where the parallel phase stopped [R]
   (restarting it per phase puts the serial phase back at the full rate after the parallel phase
   has decayed it, which drives the BN-free `cnn` to chance). Momentum starts from zero in
   the serial phase: the stages' buffers accumulated gradients of their penalty objectives, not
   of the task loss.

The `loss` logged in the parallel phase is the objective that phase minimises: stage K's task
loss on its input λ_{K−1} plus every boundary's penalty (`task_loss` and `train_acc` are stage
K's alone); test accuracy is always the serial forward.

β follows a geometric schedule per epoch, β_e = min(beta_max, beta·beta_growth^e) [R]. The
penalty is a per-element mean (stage_solver.py): that is the sum-of-squares penalty of the
standard formulation, β_sum/2·‖r‖², with β_sum = β/d (d elements at the boundary) and μ_sum = μ/d
— the same method, iterate for iterate (tests/test_layer_parallel.py); the effective β_sum of
each boundary is logged as `beta_sum_b{k}`.

λ is initialised at the first-order solution of its own sub-problem (aux_vars.py), so stage 1
has a non-zero target from the first step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from suite.errors import UsageError
from suite.methods.base import Method
from suite.methods.layer_parallel.aux_vars import AuxiliaryVariables, aux_update
from suite.methods.layer_parallel.balance import time_balanced_bounds
from suite.methods.layer_parallel.stage_runners import LocalStages, ProcessStages
from suite.methods.layer_parallel.stage_solver import (
    STAT_CORRECT,
    STAT_OBJECTIVE,
    STAT_OUT_NORM,
    STAT_RESIDUAL_NORM,
    STAT_SECONDS,
    StageSolver,
    StageTask,
    solver_args,
)
from suite.methods.layer_parallel.stages import (
    BoundaryFilter,
    boundary_shapes,
    bounds_from_blocks,
    split_stages,
    stage_bounds,
)
from suite.methods.optim import OptimHParams
from suite.metrics import measured, modelled
from suite.params import param

TASK_LOSS = measured("lp/task_loss", "nats", "task loss of the last stage on its auxiliary input (parallel phase)",
                     was="task_loss")
VIOLATION = measured("lp/violation_b{k}", "1", "boundary k's violation ‖F_k(λ_{k−1}) − λ_k‖ / ‖F_k(λ_{k−1})‖, "
                                              "epoch mean of the per-batch value", was="violation_b{k}")
BETA = measured("lp/beta", "1", "penalty weight β at the end of the epoch (per squared norm)", was="beta")
BETA_SUM = measured("lp/beta_sum_b{k}", "1", "β of boundary k per element (β / d_k)", was="beta_sum_b{k}")
SERIAL_PHASE = measured("lp/serial_phase", "flag", "1 when the epoch ran the serial BP correction", was="serial_phase")
AUX_MB = measured("lp/aux_mb", "MB", "memory of the auxiliary variables (and multipliers)", was="aux_mb")
STAGE_SECONDS = measured("lp/stage{k}_seconds", "s", "stage k's compute time in the epoch", was="stage{k}_seconds")
COMM_MB = modelled("lp/comm_mb", "MB", "boundary traffic of the epoch with the downsampling filters", was="comm_mb")
COMM_MB_FULL = modelled("lp/comm_mb_without_ds", "MB", "the same traffic without the filters", was="comm_mb_without_ds")
PARALLEL_SECONDS = modelled("lp/modelled_parallel_seconds", "s", "epoch time on K devices: the slowest stage "
                                                                 "per step plus traffic / link bandwidth",
                            was="modelled_parallel_seconds")
SPEEDUP = modelled("lp/modelled_speedup", "×", "sum of stage times / modelled parallel time", was="modelled_speedup")
STAGE_BLOCKS = measured("lp/stage{k}_blocks", "blocks", "blocks in stage k: the cut the run used (logged once)")
CUT_SECONDS = measured("lp/cut_search_seconds", "s", "set-up time spent timing candidate cuts (balance=time; "
                                                   "not part of the training time; logged once)")
LAYER_PARALLEL_METRICS = (TASK_LOSS, VIOLATION, BETA, BETA_SUM, SERIAL_PHASE, AUX_MB, STAGE_SECONDS, COMM_MB,
                          COMM_MB_FULL, PARALLEL_SECONDS, SPEEDUP, STAGE_BLOCKS, CUT_SECONDS)


@dataclass(frozen=True)
class PenaltyHParams(OptimHParams):
    stages: int = param(2, "K: number of stages the blocks are cut into (≤ number of blocks)", low=2)
    beta: float = param(10.0, "penalty weight β at epoch 0, per element (the per-element mean penalty; β/d per "
                        "squared norm, d elements at the boundary) [R: value NF]", low=0.0, low_open=True)
    beta_growth: float = param(2.0, "β is multiplied by this every epoch (geometric schedule) [R]", low=1.0)
    beta_max: float = param(1000.0, "cap of the β schedule [R]", low=0.0, low_open=True)
    aux_step: float = param(0.5, "a: step of the auxiliary-variable update (1 = jump to the stage's own "
                            "minimiser when no downstream term) [R]", low=0.0, low_open=True, high=1.0)
    serial_share: float = param(0.25, "SPH: fraction of the epochs (at the end) trained serially end to end "
                                "by BP on augmented data; 0 = pure layer-parallel [R: NF]", low=0.0, high=1.0)
    balance: str = param("blocks", "stage cut: equal block counts, or the cut whose slowest stage is fastest "
                         "in measured training steps (machine-dependent; balance.py) [R]", choices=("blocks", "time"))
    stage_blocks: tuple[int, ...] = param((), "explicit cut: blocks per stage, in order (e.g. 4,5: ResNet-20's 9 "
                                          "blocks in 2 stages); overrides balance; empty = use balance",
                                          hash_default=False)
    ds_stride: int = param(1, "DS filter: store and send auxiliary variables average-pooled with this stride "
                           "(1 = off) [R: exact filter NF]", low=1)
    distributed: bool = param(False, "run the K stages in K worker processes (torch.distributed, gloo) "
                              "instead of one after another in this process")
    worker_threads: int = param(1, "intra-op threads per worker process (distributed mode)", low=1)
    link_gb_per_s: float = param(12.0, "modelled link bandwidth between devices, GB/s (an assumption: "
                                 "≈ PCIe 3.0 ×16) for the modelled K-device speedup", low=0.0, low_open=True)


class Penalty(Method):
    name = "penalty"
    HParams = PenaltyHParams
    METRICS = LAYER_PARALLEL_METRICS
    summary = "layer-parallel training, quadratic-penalty auxiliary variables (+ SPH, DS filters)"
    source = "Sun et al. 2020/2021 (arXiv 2009.01462); formulation reconstructed, see docs/layer-parallel.md"
    multipliers = False

    def __init__(self, hparams=None):
        super().__init__(hparams)
        self.runner = None  # where the stages run (set up in `setup`)
        self.threads_before: int | None = None  # this process's threads while lent to the workers

    @classmethod
    def workers(cls, hparams) -> int:
        return hparams.stages if hparams.distributed else 1

    def reject_settings(self, model, run, device):
        stage_bounds(len(model.blocks), self.hp.stages)  # raises UsageError: more stages than blocks
        if self.hp.stage_blocks:
            bounds_from_blocks(self.hp.stage_blocks, len(model.blocks))
            if len(self.hp.stage_blocks) != self.hp.stages:
                raise UsageError(f"stage_blocks={','.join(map(str, self.hp.stage_blocks))} names "
                                 f"{len(self.hp.stage_blocks)} stages but stages={self.hp.stages}: make them agree")
        if self.hp.distributed and device.type != "cpu":
            raise UsageError("distributed stages are implemented for CPU (gloo); run on CPU or set distributed=false")

    def setup(self, model, ctx):
        super().setup(model, ctx)
        t0 = time.perf_counter()
        self.bounds = self._cut(model, ctx)
        self.cut_seconds = time.perf_counter() - t0
        self.stages = split_stages(model, self.hp.stages, self.bounds)
        full_shapes = boundary_shapes(self.stages, ctx.data.input_shape, ctx.device)
        self.filters = [BoundaryFilter(self.hp.ds_stride, s) for s in full_shapes]
        stored = [f.stored_shape for f in self.filters]
        self.aux = AuxiliaryVariables(len(ctx.data.train), stored, self.multipliers)
        self.serial_epochs = round(self.hp.serial_share * ctx.epochs)
        self.parallel_epochs = ctx.epochs - self.serial_epochs
        # the stages follow the first part of the run's one schedule (see the module docstring)
        args = solver_args(self.stages, self.filters, self.hp, ctx.total_steps, ctx.steps_per_epoch)
        if self.hp.distributed and self.parallel_epochs:
            in_shapes = [tuple(ctx.data.input_shape)] + stored
            shapes = [(in_shapes[k], stored[k] if k < len(stored) else ()) for k in range(len(self.stages))]
            self.runner = ProcessStages(args, shapes, self.multipliers, self.hp.worker_threads,
                                        ctx.data.batch_size)
            # while the workers compute, the coordinator only indexes and updates λ: it keeps the
            # cores the workers leave free (at least one), so no thread pool spins against them
            self.coordinator_threads = max(1, (os.cpu_count() or 1) - len(self.stages) * self.hp.worker_threads)
        else:
            self.runner = LocalStages([StageSolver(*a) for a in args])
            self.coordinator_threads = None
        self.elements = [torch.Size(s).numel() for s in stored]
        full_elements = [torch.Size(s).numel() for s in full_shapes]
        # per boundary, float32: λ_{k−1} and the input gradient travel with stage k+1, λ_k and
        # D(F_k) with stage k, and μ_k too for AL
        per_boundary = 3 if self.multipliers else 2
        self.comm_bytes_per_sample = 4 * per_boundary * sum(self.elements)
        self.comm_bytes_per_sample_full = 4 * per_boundary * sum(full_elements)
        self.epoch, self.step_count, self.serial_optim = 0, 0, None
        self._reset_epoch_counters()

    def _cut(self, model, ctx) -> list[tuple[int, int]]:
        """Block ranges of the stages: the explicit `stage_blocks`, else by `balance`."""
        if self.hp.stage_blocks:
            return bounds_from_blocks(self.hp.stage_blocks, len(model.blocks))
        if self.hp.balance == "time":
            return time_balanced_bounds(model, self.hp.stages, ctx.data.input_shape, ctx.data.batch_size, self.hp,
                                        self.multipliers)
        return stage_bounds(len(model.blocks), self.hp.stages)

    def _lend_cores_to_workers(self):
        if self.coordinator_threads and self.threads_before is None:
            self.threads_before = torch.get_num_threads()
            torch.set_num_threads(self.coordinator_threads)

    def _take_cores_back(self):
        """Evaluation and the serial phase run here again, on every thread."""
        if self.threads_before is not None:
            torch.set_num_threads(self.threads_before)
            self.threads_before = None

    def _reset_epoch_counters(self):
        self.stage_seconds = torch.zeros(len(self.stages), dtype=torch.float64)
        self.critical_seconds = 0.0  # Σ over steps of max_k (stage compute)
        self.comm_bytes = self.comm_bytes_full = 0

    @property
    def beta(self) -> float:
        return min(self.hp.beta_max, self.hp.beta * self.hp.beta_growth ** self.epoch)

    def in_serial_phase(self) -> bool:
        return self.epoch >= self.parallel_epochs

    def phase(self, epoch: int) -> str:
        return "serial" if epoch >= self.parallel_epochs else "parallel"

    # -- one outer iteration ----------------------------------------------------------------------
    def train_step(self, batch):
        if self.in_serial_phase():
            return self._serial_step(batch)
        data = self.ctx.data
        if not self.aux.initialised:
            self.aux.initialise(self.stages, self.filters, data.fetch, data.train.labels, self.beta,
                                self.elements)
        self._lend_cores_to_workers()
        idx, beta = batch.index.cpu(), self.beta
        boundary, mu = self.aux.gather(idx)  # λ_k of the batch: stage k's target, stage k+1's input
        n_boundaries = len(boundary)
        tasks = [StageTask(inp=data.fetch(batch.index) if k == 0 else boundary[k - 1],
                           target=boundary[k] if k < n_boundaries else None,
                           mu=mu[k] if mu is not None and k < n_boundaries else None,
                           y=batch.y if k == n_boundaries else None, beta=beta)
                for k in range(len(self.stages))]
        self.runner.launch(tasks)
        self.aux.settle()  # the previous step's λ/μ update, while the stages compute (aux_vars.py)
        results = self.runner.collect()
        self.aux.defer(idx, lambda lam, mu: self._update_aux(idx, tasks, results, beta, lam, mu))
        # the logged loss is the objective this phase minimises (task loss of stage K on λ_{K−1}
        # plus every boundary's penalty), so the harness's divergence check watches the right thing
        out = {"loss": sum(r.stats[STAT_OBJECTIVE] for r in results).float(),
               TASK_LOSS.key: results[-1].stats[STAT_OBJECTIVE].float(), "correct": results[-1].stats[STAT_CORRECT]}
        for k in range(n_boundaries):
            stats = results[k].stats
            out[VIOLATION.name(k=k + 1)] = (stats[STAT_RESIDUAL_NORM] / stats[STAT_OUT_NORM].clamp_min(1e-12)).float()
        self._account(tasks, results)
        self.step_count += 1
        return out

    def _update_aux(self, idx, tasks, results, beta, lam, mu):
        """Step 1 (and 2 for AL) of the outer iteration for the batch's rows `idx`."""
        for k in range(len(lam)):
            new_lam, new_mu = aux_update(tasks[k].target, tasks[k].mu, results[k].out, results[k + 1].grad_in, beta,
                                         self.elements[k], self.hp.aux_step)
            lam[k][idx] = new_lam
            if mu is not None:
                mu[k][idx] = new_mu

    def _account(self, tasks, results):
        seconds = torch.stack([r.stats[STAT_SECONDS] for r in results])
        self.stage_seconds += seconds
        self.critical_seconds += float(seconds.max())
        batch = tasks[0].inp.shape[0]
        self.comm_bytes += batch * self.comm_bytes_per_sample
        self.comm_bytes_full += batch * self.comm_bytes_per_sample_full

    def _start_serial_phase(self):
        """The whole model's optimiser, its schedule continued at the current step of the run."""
        self.aux.settle()
        self.runner.pull(self.stages)
        self.runner.close()
        self.serial_optim = self.make_optimiser(start_step=self.step_count)

    def _serial_step(self, batch):
        if self.serial_optim is None:
            self._start_serial_phase()
        self.model.train()
        logits = self.model(batch.x)
        loss = self.loss_fn(logits, batch.y)
        self.serial_optim.step(loss)
        self.step_count += 1
        return self.step_stats(logits, batch.y, loss)

    def end_epoch(self, epoch):
        self.aux.settle()
        self._take_cores_back()
        parallel = not self.in_serial_phase()
        metrics = {BETA.key: self.beta, SERIAL_PHASE.key: float(not parallel), AUX_MB.key: self.aux.nbytes / 2**20}
        metrics |= {BETA_SUM.name(k=k + 1): self.beta / d for k, d in enumerate(self.elements)}
        if epoch == 0:
            metrics |= {STAGE_BLOCKS.name(k=k + 1): float(stop - start) for k, (start, stop) in enumerate(self.bounds)}
            metrics[CUT_SECONDS.key] = self.cut_seconds
        if parallel:
            self.runner.pull(self.stages)  # evaluation needs the current parameters here
            comm_s = self.comm_bytes / (self.hp.link_gb_per_s * 1e9)
            serial_s = float(self.stage_seconds.sum())
            metrics |= {STAGE_SECONDS.name(k=k + 1): float(s) for k, s in enumerate(self.stage_seconds)}
            metrics |= {COMM_MB.key: self.comm_bytes / 2**20, COMM_MB_FULL.key: self.comm_bytes_full / 2**20,
                        PARALLEL_SECONDS.key: self.critical_seconds + comm_s,
                        SPEEDUP.key: serial_s / (self.critical_seconds + comm_s)}
        self._reset_epoch_counters()
        self.epoch = epoch + 1
        return metrics

    def close(self):
        self._take_cores_back()
        if self.runner is not None:
            self.runner.close()


class AugmentedLagrangian(Penalty):
    name = "augmented-lagrangian"
    summary = "layer-parallel training, augmented-Lagrangian auxiliary variables (+ SPH, DS filters)"
    multipliers = True
