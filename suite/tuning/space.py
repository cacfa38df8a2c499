"""Search spaces: what a study searches, and every check on them that needs no compute.

Each method's space is what its hyper-parameters declare (`param(..., tune=LogUniform(1e-4, 1.0))`;
the learning rate of every SGD/Adam method declares one), changed for a call with
`--space KEY=SPEC`: `log:LOW:HIGH`, `uniform:LOW:HIGH`, `int:LOW:HIGH`, `choice:A,B,...`, or `fixed`
(do not tune KEY). Only method hyper-parameters are searched: run settings (epochs, batch size,
subsets) are the budget every method shares, not something a study may change.
"""

from __future__ import annotations

import itertools
import math
import random

from suite.config import Cell, TrainConfig, resolve
from suite.errors import UsageError, nearest
from suite.params import (
    Categorical,
    IntUniform,
    LogUniform,
    SearchSpace,
    Uniform,
    keys_of,
    parse_assignments,
    search_space,
)

SPEC_FORMS = "log:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, choice:A,B,... or fixed"


def parse_spec(key: str, text: str) -> SearchSpace | None:
    """One `--space` value; None means `fixed`."""
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    if kind == "fixed" and not rest:
        return None
    if kind == "choice":
        choices = tuple(c.strip() for c in rest.split(",") if c.strip())
        return Categorical(choices)
    parts = rest.split(":")
    if kind not in ("log", "uniform", "int") or len(parts) != 2:
        raise UsageError(f"--space {key}={text}: expected {SPEC_FORMS}")
    try:
        if kind == "int":
            return IntUniform(int(parts[0]), int(parts[1]))
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--space {key}={text}: the bounds must be numbers") from None
    return LogUniform(low, high) if kind == "log" else Uniform(low, high)


def parse_spaces(pairs: list[str]) -> dict[str, SearchSpace | None]:
    return {key: parse_spec(key, value) for key, value in parse_assignments(pairs).items()}


def check_keys(changes: dict[str, SearchSpace | None], methods: list[str]) -> None:
    """Every `--space` key must be a hyper-parameter of at least one of the methods tuned."""
    from suite.methods import METHODS

    known = set().union(*(keys_of(METHODS[m].HParams) for m in methods))
    run_settings = set(keys_of(TrainConfig))
    for key in changes:
        if key in known:
            continue
        if key in run_settings:
            raise UsageError(f"--space {key}: '{key}' is a run setting, part of the budget every method "
                             f"shares; a study searches method hyper-parameters only")
        hint = nearest(key, known)
        raise UsageError(f"unknown parameter '{key}' in the search space." + (f" Did you mean '{hint}'?" if hint else "")
                         + f" Hyper-parameters of {', '.join(methods)}: {', '.join(sorted(known))}")


def method_space(method: str, changes: dict[str, SearchSpace | None]) -> dict[str, SearchSpace]:
    """The method's declared space with the `--space` changes that apply to its parameters."""
    from suite.methods import METHODS

    hparams = METHODS[method].HParams
    space = search_space(hparams)
    keys = set(keys_of(hparams))
    for key, value in changes.items():
        if key not in keys:
            continue
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value
    return dict(sorted(space.items()))


def ends(space: SearchSpace) -> tuple:
    """The values a space can reach at its edges (all of them for a categorical)."""
    return space.choices if isinstance(space, Categorical) else (space.low, space.high)


def as_override(value) -> str:
    """A sampled value as a `--set` string that parses back to exactly the same value."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def check_in_range(cell: Cell, space: dict[str, SearchSpace]) -> None:
    """Every edge (every choice) of every range is a valid value of its parameter for this cell."""
    for key, sub in space.items():
        for value in ends(sub):
            try:
                resolve(cell.with_overrides(**{key: as_override(value)}))
            except UsageError as err:
                raise UsageError(f"search space of '{key}' for {cell.method} ({sub}): {err}") from None


def describe(space: dict[str, SearchSpace]) -> dict[str, str]:
    return {key: str(sub) for key, sub in space.items()}


def distributions(space: dict[str, SearchSpace]) -> dict:
    """Optuna's distribution for each searched parameter."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, sub in space.items():
        if isinstance(sub, Categorical):
            out[key] = CategoricalDistribution(sub.choices)
        elif isinstance(sub, IntUniform):
            out[key] = IntDistribution(sub.low, sub.high)
        else:
            out[key] = FloatDistribution(sub.low, sub.high, log=isinstance(sub, LogUniform))
    return out


def _axis(sub: SearchSpace, n: int) -> list:
    if isinstance(sub, Categorical):
        return list(sub.choices)
    if isinstance(sub, LogUniform):  # clamped: exp(log(x)) may round just outside the range
        lo, hi = math.log(sub.low), math.log(sub.high)
        return [min(max(math.exp(lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.5)), sub.low), sub.high)
                for i in range(n)]
    values = [sub.low + (sub.high - sub.low) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    return sorted({round(v) for v in values}) if isinstance(sub, IntUniform) else values


def grid_points(space: dict[str, SearchSpace], trials: int, seed: int) -> list[dict]:
    """`trials` points of a grid: every choice of each categorical, and n evenly spaced values
    (log-spaced for LogUniform, ends included) of each numeric parameter, n the smallest that
    fills the budget. One numeric parameter gets exactly `trials` values; where the product is
    larger than the budget, a subset drawn with `seed` is taken (in grid order)."""
    if not space:
        return [{} for _ in range(trials)]
    numeric = [k for k, s in space.items() if not isinstance(s, Categorical)]
    categories = math.prod(len(s.choices) for s in space.values() if isinstance(s, Categorical))
    n = 1
    while numeric and categories * n ** len(numeric) < trials:
        n += 1
    axes = {k: _axis(s, n) for k, s in space.items()}
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    if len(points) > trials:
        keep = sorted(random.Random(seed).sample(range(len(points)), trials))
        points = [points[i] for i in keep]
    return points
