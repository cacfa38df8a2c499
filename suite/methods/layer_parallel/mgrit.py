"""MGRIT (multigrid reduction in time) over a run of ODE-form residual blocks, in pure torch.

A run of N blocks is the forward-Euler system u_{n+1} = Φ_n(u_n) = u_n + branch_n(u_n), n < N, with
the step size h folded into `branch_n`. `MgritSolver` solves any such one-step system
        u_0 = g_0,   u_i − Φ(u_{i−1}) = g_i   (i ≥ 1)
on a hierarchy of grids by the nonlinear (FAS) multigrid V-cycle of Falgout et al. 2014 (SIAM J.
Sci. Comput. 36(6), the MGRIT paper) as implemented by XBraid and used by TorchBraid
(github.com/Multilevel-NN/torchbraid); `mgrit_run` uses it for the forward states and, backward
in layer-time, for the linear adjoint, inside one autograd Function. Tags: [S] standard MGRIT,
[C] seen in TorchBraid's or XBraid's code, [R] this suite's choice.

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
step is near the identity, so this is the zero-cost guess closest to the solution; TorchBraid
starts from zeros], or, with a warm start, the states of the previous solve (below).

TorchBraid's two options [C: `torchbraid_app.pyx` sets XBraid's `braid_SetSkip`; the core is
reused between batches, so each `braid_Drive` is a warm restart]:
* `skip_downcycle`: the first V-cycle does no work on the way down — no relaxation, no residual,
  no FAS correction — so the coarsest level solves the plain coarse system from u_0 and the way
  up interpolates and F-relaxes as usual (XBraid `_braid_Drive`: start on the coarsest level
  after `_braid_CopyFineToCoarse`; `_braid_FInterp` cleans the coarse right-hand sides after
  each cycle, so none carries over between solves). That first cycle overwrites every point, so
  with it a warm start changes nothing (tested).
* warm start (`guess`): the solve starts from given states, u_0 replaced by the new initial value
  (XBraid `warm_restart`, `setInitial`).

Residual. After each iteration, ‖r‖ over level-0 C-points (F-point residuals are zero after the
final F-relaxation); `tol` > 0 stops when ‖r_k‖ ≤ tol·‖r_ref‖, checked before every cycle. r_ref is
the first residual the solve computes (that of the F-relaxed guess, or after the skipped first
cycle), except that a warm-started solve keeps the reference of the solve it starts from [R]:
its own first residual is already small, and measuring against it would demand more of it than
of a cold solve.

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

from suite.methods.layer_parallel.mgrit_placement import LocalPlacement, memory_format

Step = Callable[[int, int, torch.Tensor], torch.Tensor]  # (from point, to point, value) -> value


@dataclass(frozen=True)
class MgritConfig:
    cfactor: int = 4
    max_levels: int = 3
    nrelax_fine: int = 0  # CF sweeps after the first F-relaxation on level 0 (0 = F-relaxation)
    nrelax_coarse: int = 1  # the same on coarser levels (1 = FCF)
    skip_downcycle: bool = False  # the first V-cycle does no work on the way down (XBraid's skip)


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
    residuals: list[torch.Tensor] = field(default_factory=list)  # ‖r_k‖, k = first .. iterations
    phases: list[Phase] = field(default_factory=list)
    first: int = 0  # iteration of residuals[0]: 0 (the guess), 1 after a skipped down-cycle
    reference: torch.Tensor | None = None  # ‖r_ref‖ of the relative tolerance

    @property
    def iterations(self) -> int:
        return max(0, len(self.residuals) - 1 + self.first)


def critical_path(phases: Sequence[Phase], workers: int) -> int:
    """Layer evaluations one after another when each phase's chains are shared by `workers`."""
    return sum(math.ceil(p.chains / workers) * p.length for p in phases)


def coarsen(points: list[int], cfactor: int, max_levels: int) -> list[list[int]]:
    levels = [points]
    while len(levels) < max_levels and (len(levels[-1]) - 1) // cfactor >= 1:
        levels.append(levels[-1][::cfactor])
    return levels


class MgritSolver:
    """Solves u_0 = g_0, u_i = Φ(u_{i−1}) + g_i on `points` (in propagation order).

    `place` spreads the work over processes (mgrit_placement.py); every process runs this same
    code, and a list entry is meaningful only on the rank that is its point's home (None or stale
    elsewhere). With the default `LocalPlacement` everything happens here."""

    def __init__(self, step: Step, points: list[int], config: MgritConfig, place=None):
        self.step, self.config, self.c = step, config, config.cfactor
        self.place = place or LocalPlacement()
        self.levels = coarsen(points, config.cfactor, config.max_levels)

    def solve(self, u0: torch.Tensor, until: Iterations, guess: list | None = None,
              reference: torch.Tensor | None = None) -> tuple[list[torch.Tensor], SolveTrace]:
        """The states at every point. `guess`: a warm start (its entry 0 is replaced by u0);
        `reference`: the ‖r_ref‖ that `until.tol` is relative to (default: the first residual)."""
        trace = SolveTrace()
        u = list(guess) if guess is not None else [u0] * len(self.levels[0])
        u[0] = u0
        g = [u0] + [None] * (len(u) - 1)  # None: a zero right-hand side, skipped (bitwise serial)
        if len(self.levels) == 1:
            self._serial(0, u, g, trace)
            trace.residuals.append(torch.zeros((), dtype=torch.float64, device=u0.device))
            trace.reference = trace.residuals[0]
            self.place.flush()
            return u, trace
        if self.config.skip_downcycle:
            self._cycle(0, u, g, trace, skip=True)
            trace.first = 1
        else:
            self._f_relax(0, u, g, trace)
        residual = self._residual(0, u, g, trace)
        trace.residuals.append(self._norm(0, residual))
        trace.reference = trace.residuals[0] if reference is None else reference
        budget = until.max_iters if until.tol > 0 else until.iters
        while trace.iterations < budget:
            if until.tol > 0 and trace.residuals[-1] <= until.tol * trace.reference:
                break
            self._cycle(0, u, g, trace, residual)
            residual = self._residual(0, u, g, trace)
            trace.residuals.append(self._norm(0, residual))
        self.place.flush()
        return u, trace

    # -- one level's operations; u and g are that level's values and right-hand sides -----------
    def _propagate(self, lvl: int, i: int, u) -> torch.Tensor | None:
        """Φ(u_{i−1}) on level `lvl`, evaluated where its layer lives and delivered to point i's home."""
        points, place = self.levels[lvl], self.place
        a, b = points[i - 1], points[i]
        at = place.where(a, b)
        x = place.move(u[i - 1], place.home(a), at)
        y = self.step(a, b, x) if place.rank == at else None
        return place.move(y, at, place.home(b))

    def _here(self, lvl: int, i: int) -> bool:
        return self.place.rank == self.place.home(self.levels[lvl][i])

    def _advance(self, lvl: int, u, g, i: int) -> None:
        x = self._propagate(lvl, i, u)
        if self._here(lvl, i):
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

    def _residual(self, lvl, u, g, trace) -> list[torch.Tensor | None]:
        """r_i = g_i + Φ(u_{i−1}) − u_i at the C-points i ≥ c (F-point residuals are zero here)."""
        out = []
        for i in range(self.c, len(u), self.c):
            x = self._propagate(lvl, i, u)
            r = None
            if self._here(lvl, i):
                r = x - u[i]
                r = r if g[i] is None else r + g[i]
            out.append(r)
        trace.phases.append(Phase(len(out), 1))
        return out

    def _norm(self, lvl, residual) -> torch.Tensor:
        """‖r‖ over the level's C-points, the same on every rank: each home squares its own entries."""
        like = torch.zeros((), dtype=torch.float64)
        squares = []
        for m, r in enumerate(residual, start=1):
            home = self.place.home(self.levels[lvl][m * self.c])
            mine = r.double().pow(2).sum() if self.place.rank == home else None
            squares.append(self.place.share(mine, home, like))
        return torch.stack(squares).sum().sqrt()

    def _cycle(self, lvl, u, g, trace, residual=None, skip: bool = False) -> None:
        """One FAS V-cycle from level `lvl`. A given `residual` (of u) means u is already F-relaxed,
        as it is on level 0 after the previous cycle: the leading F-relaxation would change nothing.
        `skip`: no work on the way down; the coarse level starts from the injected values with the
        injected right-hand side (zero beyond u_0: no FAS correction)."""
        if lvl == len(self.levels) - 1:
            self._serial(lvl, u, g, trace)
            return
        if skip:
            v = u[::self.c]
            self._cycle(lvl + 1, v, g[::self.c], trace, skip=True)
            u[::self.c] = v
            self._f_relax(lvl, u, g, trace)
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
        g_coarse = [g[0]]
        for m, r in enumerate(residual, start=1):
            x = self._propagate(lvl + 1, m, v)
            g_coarse.append(r + v[m] - x if self._here(lvl + 1, m) else None)
        trace.phases.append(Phase(len(residual), 1))
        self._cycle(lvl + 1, v, g_coarse, trace)
        u[::self.c] = v
        self._f_relax(lvl, u, g, trace)


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


def trainable_flat(block: nn.Module) -> int:
    return sum(p.numel() for p in block.parameters() if p.requires_grad)


class WarmStart:
    """The last solve's states and tolerance reference, per solve kind ("fwd"/"adj"), kept by
    each rank for its own points; offered as the next solve's guess when the shapes match (the
    epoch's last, shorter batch starts cold) [C: XBraid's warm restart]."""

    def __init__(self):
        self.kept: dict[str, tuple[list, torch.Tensor]] = {}

    def guess(self, kind: str, like: torch.Tensor) -> tuple[list | None, torch.Tensor | None]:
        states, reference = self.kept.get(kind, (None, None))
        if states is None or states[0].shape != like.shape:
            return None, None
        return states, reference

    def keep(self, kind: str, states: list, trace: SolveTrace) -> None:
        self.kept[kind] = ([None if s is None else s.detach() for s in states], trace.reference)


def run_forward(blocks: Sequence[nn.Module], u0: torch.Tensor, config: MgritConfig, until: Iterations,
                place, warm: WarmStart | None = None) -> tuple[torch.Tensor | None, list, SolveTrace]:
    """The forward states of a run by MGRIT (SPMD: every rank of `place` calls this). Returns u_N
    on rank 0, the states (this rank's meaningful at their homes) and the solve's trace. With
    `warm`, the solve starts from (and leaves) the previous forward solve's states."""
    n = len(blocks)
    guess, reference = warm.guess("fwd", u0) if warm is not None else (None, None)
    solver = MgritSolver(euler_step(blocks), list(range(n + 1)), config, place)
    states, trace = solver.solve(u0, until, guess, reference)
    if warm is not None:
        warm.keep("fwd", states, trace)
    out = place.move(states[n], place.home(n), 0)
    place.flush()
    return out, states, trace


def run_adjoint(blocks: Sequence[nn.Module], states: list, grad_out: torch.Tensor, config: MgritConfig,
                until: Iterations, place, warm: WarmStart | None = None) -> tuple[torch.Tensor | None, list, SolveTrace]:
    """The adjoint of a run by MGRIT at its (possibly inexact) forward `states`, and each layer's
    parameter VJP on the layer's owner (SPMD). Returns, on rank 0, dL/du_0 and one flat gradient
    of the trainable parameters per block; the trace on every rank. With `warm`, the solve
    starts from (and leaves) the previous adjoint solve's states."""
    n = len(blocks)
    inputs, outputs = {}, {}
    with torch.enable_grad():  # each owned layer's graph at its state, built once
        for a in range(n):
            if place.owns(a):
                inputs[a] = states[a].detach().requires_grad_()
                outputs[a] = blocks[a].branch(inputs[a])

    def adjoint_step(b: int, a: int, w: torch.Tensor) -> torch.Tensor:
        """From point b back to a < b: the transposed Jacobian of u + (b−a)·branch_a(u) at u_a."""
        vjp, = torch.autograd.grad(outputs[a], inputs[a], w, retain_graph=True)
        return w + vjp if b - a == 1 else w + (b - a) * vjp

    guess, reference = warm.guess("adj", grad_out) if warm is not None else (None, None)
    solver = MgritSolver(adjoint_step, list(range(n, -1, -1)), config, place)
    adjoints, trace = solver.solve(grad_out, until, guess, reference)
    if warm is not None:
        warm.keep("adj", adjoints, trace)
    adjoints = adjoints[::-1]  # w_n at index n
    flat_grads = []
    for a, block in enumerate(blocks):  # independent per layer, each on its owner, then to rank 0
        grad = None
        if place.owns(a):
            trained = [p for p in block.parameters() if p.requires_grad]
            found = torch.autograd.grad(outputs[a], trained, adjoints[a + 1], allow_unused=True) if trained else ()
            grad = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                              for g, p in zip(found, trained)]) if trained else torch.zeros(0)
        flat_grads.append(place.move(grad, place.owners_of(a), 0, like=torch.empty(trainable_flat(block))))
    grad_in = place.move(adjoints[0], place.home(0), 0)
    place.flush()
    return grad_in, flat_grads, trace


class LocalTeam:
    """The run's layers all in this process."""

    def __init__(self, config: MgritConfig):
        self.config = config
        self.warm: dict[int, WarmStart] = {}  # run -> its last solves, for warm starts

    def forward(self, run: int, blocks, u0, until, warm: bool = False):
        keep = self.warm.setdefault(run, WarmStart()) if warm else None
        out, states, trace = run_forward(blocks, u0, self.config, until, LocalPlacement(), keep)
        return out.clone(), states, trace

    def adjoint(self, run: int, blocks, states, grad_out, until, warm: bool = False):
        keep = self.warm.setdefault(run, WarmStart()) if warm else None
        return run_adjoint(blocks, states, grad_out, self.config, until, LocalPlacement(), keep)

    def close(self) -> None:
        return None


class _MgritRun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u0, run, blocks, team, fwd, bwd, trace, warm, *params):
        out, states, trace.forward = team.forward(run, blocks, u0, fwd, warm)
        ctx.run, ctx.blocks, ctx.team, ctx.bwd, ctx.trace, ctx.states = run, blocks, team, bwd, trace, states
        ctx.warm = warm
        trace.layers = len(blocks)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # the adjoint in the states' layout, whatever strides the head's backward produced
        grad_out = grad_out.contiguous(memory_format=memory_format(ctx.states[0]))
        grad_in, flat_grads, ctx.trace.adjoint = ctx.team.adjoint(ctx.run, ctx.blocks, ctx.states, grad_out,
                                                                  ctx.bwd, ctx.warm)
        ctx.states = None
        grads = []
        for block, flat in zip(ctx.blocks, flat_grads):
            offset = 0
            for p in block.parameters():
                if not p.requires_grad:
                    grads.append(None)
                    continue
                grads.append(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        return (grad_in, None, None, None, None, None, None, None, *grads)


def mgrit_run(blocks: Sequence[nn.Module], u0: torch.Tensor, config: MgritConfig, fwd: Iterations,
              bwd: Iterations, trace: RunTrace | None = None, team=None, run: int = 0,
              warm: bool = False) -> torch.Tensor:
    """u_N of the run by MGRIT; backward solves the adjoint by MGRIT too. `trace` collects both;
    `team` places the layers on processes (default: all here), `run` names the run to it; `warm`
    starts both solves from the team's previous solves of this run (and keeps these)."""
    params = [p for block in blocks for p in block.parameters()]
    return _MgritRun.apply(u0, run, list(blocks), team or LocalTeam(config), fwd, bwd,
                           trace if trace is not None else RunTrace(), warm, *params)
