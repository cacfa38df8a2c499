"""Typed, range-checked dataclass fields, shared by the run config and every method's HParams.

A field declares its doc string, its range or its choices once; `apply_overrides` parses
`key=value` strings into the field's type and `validate` checks every field, so each error
names the key and the allowed values before anything is computed.

A field may also declare how `bpsuite tune` searches it (`tune=LogUniform(1e-4, 1.0)`,
`Uniform`, `IntUniform`, `Categorical`); without one it stays fixed at its value while tuning.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from suite.errors import UsageError, nearest


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Searched on a log scale over [low, high] (0 < low < high): learning rates, decays."""

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and 0 < self.low < self.high):
            raise UsageError(f"log-uniform range [{self.low:g}, {self.high:g}] is empty or not "
                             f"positive: it needs 0 < low < high")

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Searched uniformly over [low, high] (low < high)."""

    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise UsageError(f"uniform range [{self.low:g}, {self.high:g}] is empty: it needs low < high")

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclasses.dataclass(frozen=True)
class IntUniform:
    """An integer searched uniformly over low..high, both included (low < high)."""

    low: int
    high: int

    def __post_init__(self):
        if not (isinstance(self.low, int) and isinstance(self.high, int) and self.low < self.high):
            raise UsageError(f"integer range {self.low}..{self.high} is empty: it needs integers low < high")

    def __str__(self) -> str:
        return f"integer {self.low}..{self.high}"


@dataclasses.dataclass(frozen=True)
class Categorical:
    """One of the listed values (at least one)."""

    choices: tuple

    def __post_init__(self):
        if not isinstance(self.choices, tuple) or not self.choices:
            raise UsageError("a categorical search space needs at least one choice")

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


SearchSpace = LogUniform | Uniform | IntUniform | Categorical


def param(default: Any, doc: str = "", *, low: float | None = None, high: float | None = None,
          low_open: bool = False, choices: tuple | None = None, tune: SearchSpace | None = None,
          hash_default: bool = True) -> Any:
    """A dataclass field with a documented range (`low`/`high`, `low_open` excludes `low`) and,
    optionally, the search space `bpsuite tune` draws it from (`tune`; None = fixed).

    `hash_default=False` is for a parameter added after runs were logged whose default reproduces
    the earlier behaviour exactly: at its default it is left out of the cell hash
    (`RunConfig.cell_hash`), so the logged runs stay the same cells; any other value is hashed."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "choices": choices, "tune": tune,
            "hash_default": hash_default}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults: dataclasses here are frozen")
    if tune is not None and not isinstance(tune, SearchSpace):
        raise TypeError(f"tune= takes LogUniform, Uniform, IntUniform or Categorical, got {tune!r}")
    return dataclasses.field(default=default, metadata=meta)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse(key: str, raw: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _parse(key, raw, candidate)
            except UsageError as err:
                errors.append(str(err))
        raise UsageError(f"--set {key}={raw}: not a valid value ({'; '.join(errors)})")
    if origin is tuple:
        item = args[0] if args else str
        parts = [p for p in raw.strip("()[] ").split(",") if p.strip()]
        return tuple(_parse(key, p.strip(), item) for p in parts)
    if typ is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--set {key}={raw}: expected a boolean (true/false)")
    if typ in (int, float):
        try:
            value = float(raw) if typ is float else int(raw)
        except ValueError:
            raise UsageError(f"--set {key}={raw}: expected {typ.__name__}") from None
        if not math.isfinite(value):
            raise UsageError(f"--set {key}={raw}: expected a finite number")
        return value
    if typ is str:
        return raw
    raise UsageError(f"--set {key}: cannot be set from the command line (type {typ})")


def parse_assignments(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """'key=value' strings to a dict; a malformed pair is an error naming it."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(f"malformed override '{pair}': expected key=value")
        out[key] = value.strip()
    return out


def keys_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def apply_overrides(obj, raw: dict[str, Any], owner: str):
    """Return a copy of the dataclass `obj` with `raw` applied (strings are parsed)."""
    types_ = _field_types(type(obj))
    changes = {}
    for key, value in raw.items():
        if key not in types_:
            hint = nearest(key, types_)
            extra = f" Did you mean '{hint}'?" if hint else ""
            raise UsageError(f"unknown key '{key}' for {owner}.{extra} Valid keys: {', '.join(sorted(types_))}")
        changes[key] = _parse(key, value, types_[key]) if isinstance(value, str) else value
    new = dataclasses.replace(obj, **changes)
    validate(new, owner)
    return new


def validate(obj, owner: str) -> None:
    """Check types, ranges and choices of every field; the error names the key."""
    types_ = _field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        meta = f.metadata
        typ = types_[f.name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if typ in (int, float, bool, str) and not isinstance(value, typ):
            raise UsageError(f"{owner}: '{f.name}' must be {typ.__name__}, got {value!r}")
        if value is None:
            continue
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise UsageError(f"{owner}: '{f.name}'={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        low, high = meta.get("low"), meta.get("high")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{owner}: '{f.name}'={value} is not a finite number")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            too_low = low is not None and (value < low or (meta.get("low_open") and value == low))
            if too_low or (high is not None and value > high):
                bounds = ([f"> {low}" if meta.get("low_open") else f">= {low}"] if low is not None else []) \
                    + ([f"<= {high}"] if high is not None else [])
                raise UsageError(f"{owner}: '{f.name}'={value} is out of range; it must be {' and '.join(bounds)}")


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for each field, for `bpsuite list` and the README."""
    return [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]


def search_space(cls) -> dict[str, SearchSpace]:
    """The fields of `cls` that declare how they are tuned, with their search spaces."""
    return {f.name: f.metadata["tune"] for f in dataclasses.fields(cls) if f.metadata.get("tune") is not None}


def hashed_fields(obj) -> dict[str, Any]:
    """A params dataclass as a dict, without the fields that are at a default declared
    `hash_default=False` (see `param`)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.metadata.get("hash_default", True) or getattr(obj, f.name) != f.default}
