"""MGRIT (multigrid reduction in time) over a run of ODE-form residual blocks, in pure torch.

A run of N blocks is the forward-Euler system u_{n+1} = Φ_n(u_n) = u_n + branch_n(u_n), n < N, with
the step size h folded into `branch_n`. `MgritSolver` solves any such one-step system
        u_0 = g_0,   u_i − Φ(u_{i−1}) = g_i   (i ≥ 1)
on a hierarchy of grids by the nonlinear (FAS) multigrid V-cycle of Falgout et al. 2014 as used
by XBraid/TorchBraid (METHODS-BRIEF §2, [S]/[C]); `mgrit_run` uses it for the forward states and,
backward in layer-time, for the linear adjoint, inside one autograd Function.

Grids. Level 0 holds the N+1 fine points (block indices 0..N). Level l+1 keeps every c-th point
of level l (its C-points); the others are F-points. N need not be divisible by c: points after
the last C-point form a shorter trailing interval that F-relaxation alone fills (XBraid's rule).
Coarsening stops at `max_levels` or when a coarser level would have no interval.

Coarse propagator. From point a to point b (fine indices) the step is u + (b−a)·branch_a(u): the
layer at the interval's start with step (b−a)·h — injection of the parameters [C: TorchBraid
`odenet_apps.py`]. On level 0 (b−a = 1) it is the block's own forward, so one level is the serial
forward bit for bit. The adjoint's coarse step is the VJP of that propagator.

Cycle. F-relaxation on level 0, FCF on coarser levels (XBraid nrelax0 = 0, nrelax = 1 [C]);
FAS restriction by injection; coarsest level solved serially; correction at C-points, then
F-relaxation. The initial guess is the initial value u_0 copied to every point [R: for small h a
step is near the identity, so this is the zero-cost guess closest to the solution].

Residual. After each iteration, ‖r‖ over level-0 C-points (F-point residuals are zero after the
final F-relaxation); `tol` > 0 stops when ‖r_k‖ ≤ tol·‖r_0‖, r_0 being that of the F-relaxed guess.

Modelled cost. Every relaxation, residual and coarse solve is logged as a `Phase`: `chains`
independent sequences of `length` layer evaluations each. With P workers a phase takes
⌈chains/P⌉·length evaluations on the critical path (communication not modelled).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

Step = Callable[[int, int, torch.Tensor], torch.Tensor]  # (from point, to point, value) -> value


@dataclass(frozen=True)
class MgritConfig:
    cfactor: int = 4
    max_levels: int = 3
    nrelax_fine: int = 0  # CF sweeps after the first F-relaxation on level 0 (0 = F-relaxation)
    nrelax_coarse: int = 1  # the same on coarser levels (1 = FCF)


@dataclass(frozen=True)
class Iterations:
    """How far one solve goes: `iters` cycles, or until ‖r_k‖ ≤ tol·‖r_0‖ (at most `max_iters`)."""
    iters: int = 2
    tol: float = 0.0
    max_iters: int = 50


@dataclass(frozen=True)
class Phase:
    chains: int  # independent sequences (run in parallel)
    length: int  # layer evaluations in each, one after another


@dataclass
class SolveTrace:
    residuals: list[torch.Tensor] = field(default_factory=list)  # ‖r_k‖, k = 0 (guess) .. iterations
    phases: list[Phase] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return max(0, len(self.residuals) - 1)


def critical_path(phases: Sequence[Phase], workers: int) -> int:
    """Layer evaluations one after another when each phase's chains are shared by `workers`."""
    return sum(math.ceil(p.chains / workers) * p.length for p in phases)


def coarsen(points: list[int], cfactor: int, max_levels: int) -> list[list[int]]:
    levels = [points]
    while len(levels) < max_levels and (len(levels[-1]) - 1) // cfactor >= 1:
        levels.append(levels[-1][::cfactor])
    return levels


class MgritSolver:
    """Solves u_0 = g_0, u_i = Φ(u_{i−1}) + g_i on `points` (in propagation order)."""

    def __init__(self, step: Step, points: list[int], config: MgritConfig):
        self.step, self.config, self.c = step, config, config.cfactor
        self.levels = coarsen(points, config.cfactor, config.max_levels)

    def solve(self, u0: torch.Tensor, until: Iterations) -> tuple[list[torch.Tensor], SolveTrace]:
        trace = SolveTrace()
        u = [u0] * len(self.levels[0])
        g = [u0] + [None] * (len(u) - 1)  # None: a zero right-hand side, skipped (bitwise serial)
        if len(self.levels) == 1:
            self._serial(0, u, g, trace)
            trace.residuals.append(torch.zeros((), dtype=u0.dtype, device=u0.device))
            return u, trace
        self._f_relax(0, u, g, trace)
        residual = self._residual(0, u, g, trace)
        trace.residuals.append(_norm(residual))
        for _ in range(until.max_iters if until.tol > 0 else until.iters):
            self._cycle(0, u, g, trace, residual)
            residual = self._residual(0, u, g, trace)
            trace.residuals.append(_norm(residual))
            if until.tol > 0 and trace.residuals[-1] <= until.tol * trace.residuals[0]:
                break
        return u, trace

    # -- one level's operations; u and g are that level's values and right-hand sides -----------
    def _advance(self, lvl: int, u, g, i: int) -> None:
        points = self.levels[lvl]
        x = self.step(points[i - 1], points[i], u[i - 1])
        u[i] = x if g[i] is None else x + g[i]

    def _serial(self, lvl, u, g, trace) -> None:
        for i in range(1, len(u)):
            self._advance(lvl, u, g, i)
        trace.phases.append(Phase(1, len(u) - 1))

    def _f_relax(self, lvl, u, g, trace) -> None:
        starts = range(0, len(u) - 1, self.c)  # one C-point per interval; intervals are independent
        for start in starts:
            for i in range(start + 1, min(start + self.c, len(u))):
                self._advance(lvl, u, g, i)
        trace.phases.append(Phase(len(starts), min(self.c, len(u)) - 1))

    def _c_relax(self, lvl, u, g, trace) -> None:
        c_points = range(self.c, len(u), self.c)
        for i in c_points:
            self._advance(lvl, u, g, i)
        trace.phases.append(Phase(len(c_points), 1))

    def _residual(self, lvl, u, g, trace) -> list[torch.Tensor]:
        """r_i = g_i + Φ(u_{i−1}) − u_i at the C-points i ≥ c (F-point residuals are zero here)."""
        points, out = self.levels[lvl], []
        for i in range(self.c, len(u), self.c):
            r = self.step(points[i - 1], points[i], u[i - 1]) - u[i]
            out.append(r if g[i] is None else r + g[i])
        trace.phases.append(Phase(len(out), 1))
        return out

    def _cycle(self, lvl, u, g, trace, residual=None) -> None:
        """One FAS V-cycle from level `lvl`. A given `residual` (of u) means u is already F-relaxed,
        as it is on level 0 after the previous cycle: the leading F-relaxation would change nothing."""
        if lvl == len(self.levels) - 1:
            self._serial(lvl, u, g, trace)
            return
        nrelax = self.config.nrelax_fine if lvl == 0 else self.config.nrelax_coarse
        if residual is None:
            self._f_relax(lvl, u, g, trace)
        for _ in range(nrelax):
            self._c_relax(lvl, u, g, trace)
            self._f_relax(lvl, u, g, trace)
        if residual is None or nrelax:
            residual = self._residual(lvl, u, g, trace)
        # FAS: the coarse problem A_c(v) = A_c(R u) + R r, with R = injection at C-points
        v = u[::self.c]
        coarse = self.levels[lvl + 1]
        g_coarse = [g[0]] + [r + v[m] - self.step(coarse[m - 1], coarse[m], v[m - 1])
                             for m, r in enumerate(residual, start=1)]
        trace.phases.append(Phase(len(residual), 1))
        self._cycle(lvl + 1, v, g_coarse, trace)
        u[::self.c] = v
        self._f_relax(lvl, u, g, trace)


def _norm(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([v.double().pow(2).sum() for v in values]).sum().sqrt()


# -- a run of blocks: forward states and adjoint ---------------------------------------------------
def euler_step(blocks: Sequence[nn.Module]) -> Step:
    """Forward propagator from point a to b: u + (b−a)·branch_a(u) (the block itself when b−a = 1)."""
    def step(a: int, b: int, u: torch.Tensor) -> torch.Tensor:
        branch = blocks[a].branch(u)
        return u + branch if b - a == 1 else u + (b - a) * branch
    return step


@dataclass
class RunTrace:
    """What one MGRIT run did in one training step: its forward solve, then (after backward) its adjoint."""
    forward: SolveTrace | None = None
    adjoint: SolveTrace | None = None
    layers: int = 0

    def modelled_cost(self, workers: int) -> int:
        """Critical-path layer evaluations of forward + backward with `workers` workers: the two
        solves, rebuilding each layer's graph at its state, and each layer's parameter VJP (both
        one evaluation per layer, all layers independent)."""
        phases = self.forward.phases + self.adjoint.phases + [Phase(self.layers, 1)] * 2
        return critical_path(phases, workers)

    @property
    def serial_cost(self) -> int:
        """Layer-serial backprop: one evaluation forward, two backward (input and weight VJPs)."""
        return 3 * self.layers


class _MgritRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u0, blocks, config, fwd, bwd, trace, *params):
        n = len(blocks)
        states, trace.forward = MgritSolver(euler_step(blocks), list(range(n + 1)), config).solve(u0, fwd)
        ctx.blocks, ctx.config, ctx.bwd, ctx.trace, ctx.states = blocks, config, bwd, trace, states
        trace.layers = n
        return states[-1].clone()

    @staticmethod
    def backward(ctx, grad_out):
        blocks, states = ctx.blocks, ctx.states
        with torch.enable_grad():  # each layer's graph at its (possibly inexact) state, built once
            inputs = [s.detach().requires_grad_() for s in states[:-1]]
            outputs = [block.branch(x) for block, x in zip(blocks, inputs)]

        def adjoint_step(b: int, a: int, w: torch.Tensor) -> torch.Tensor:
            """From point b back to a < b: the transposed Jacobian of u + (b−a)·branch_a(u) at u_a."""
            vjp, = torch.autograd.grad(outputs[a], inputs[a], w, retain_graph=True)
            return w + vjp if b - a == 1 else w + (b - a) * vjp

        n = len(blocks)
        solver = MgritSolver(adjoint_step, list(range(n, -1, -1)), ctx.config)
        adjoints, ctx.trace.adjoint = solver.solve(grad_out, ctx.bwd)
        adjoints = adjoints[::-1]  # w_n at index n
        grads = []
        for block, out, w_next in zip(blocks, outputs, adjoints[1:]):  # independent per layer
            params = list(block.parameters())
            trained = [p for p in params if p.requires_grad]
            found = iter(torch.autograd.grad(out, trained, w_next, allow_unused=True) if trained else ())
            grads += [next(found) if p.requires_grad else None for p in params]
        return (adjoints[0], None, None, None, None, None, *grads)


def mgrit_run(blocks: Sequence[nn.Module], u0: torch.Tensor, config: MgritConfig, fwd: Iterations,
              bwd: Iterations, trace: RunTrace | None = None) -> torch.Tensor:
    """u_N of the run by MGRIT; backward solves the adjoint by MGRIT too. `trace` collects both."""
    params = [p for block in blocks for p in block.parameters()]
    return _MgritRun.apply(u0, list(blocks), config, fwd, bwd, trace if trace is not None else RunTrace(), *params)
