"""The studies one `bpsuite tune` call runs, every input checked before any compute."""

from __future__ import annotations

from dataclasses import dataclass

from suite.config import resolve
from suite.errors import UsageError, lookup, unknown_name
from suite.params import SearchSpace
from suite.tuning import space as spaces
from suite.tuning.settings import selected
from suite.tuning.study import SAMPLERS, StudySpec


@dataclass(frozen=True)
class Planned:
    spec: StudySpec
    skip_reason: str | None  # the method cannot train this model: no study, said in the report


def _only(kind: str, wanted: list[str] | None, present: list[str]) -> set[str]:
    if not wanted:
        return set(present)
    for name in wanted:
        if name not in present:
            raise unknown_name(kind, name, sorted(set(present)))
    return set(wanted)


def _skip_reason(cell, data_root) -> str | None:
    from suite.harness import prepare

    _, data, model, method = prepare(resolve(cell), data_root)  # also rejects impossible settings
    try:
        return method.skip_reason(model, data.training_view())
    finally:
        method.close()


def plan(experiment: str, profile: str, *, trials: int, seed: int, sampler: str = "tpe",
         val_fraction: float = 0.1, changes: dict[str, SearchSpace | None] | None = None,
         methods: list[str] | None = None, models: list[str] | None = None, data_root=None) -> list[Planned]:
    """One study per cell of the experiment's grid (seed 0, untuned), filtered by method and model."""
    from suite.experiments import EXPERIMENTS

    if trials < 1:
        raise UsageError(f"--trials {trials}: a study needs at least 1 trial (every method gets this many)")
    if seed < 0:
        raise UsageError(f"--seed {seed}: the sampler seed must be a non-negative integer")
    if sampler not in SAMPLERS:
        raise unknown_name("sampler", sampler, SAMPLERS)
    if not 0.0 < val_fraction <= 0.5:
        raise UsageError(f"--val-fraction {val_fraction}: a study needs a validation split, 0 < fraction <= 0.5")
    exp = lookup("experiment", EXPERIMENTS, experiment)
    if profile not in exp.profiles:
        raise UsageError(f"experiment '{experiment}' has no '{profile}' profile; it has {', '.join(exp.profiles)}")
    with selected("defaults"):  # a study starts from the experiment's own settings, never from tuned ones
        cells = exp.cells(profile, 1)
    keep_methods = _only("method", methods, [c.method for c in cells])
    keep_models = _only("model", models, [c.model for c in cells])
    cells = [c for c in cells if c.method in keep_methods and c.model in keep_models]
    changes = changes or {}
    spaces.check_keys(changes, sorted({c.method for c in cells}))
    planned = []
    for cell in cells:
        space = spaces.method_space(cell.method, changes)
        spaces.check_in_range(cell, space)
        spec = StudySpec(experiment, cell, space, trials, seed, sampler, val_fraction)
        planned.append(Planned(spec, _skip_reason(spec.trial_cell({}), data_root)))
    return planned
