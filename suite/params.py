"""Typed, range-checked dataclass fields, shared by the run config and every method's HParams.

A field declares its doc string, its range or its choices once; `apply_overrides` parses
`key=value` strings into the field's type and `validate` checks every field, so each error
names the key and the allowed values before anything is computed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from suite.errors import UsageError, nearest


def param(default: Any, doc: str = "", *, low: float | None = None, high: float | None = None,
          low_open: bool = False, choices: tuple | None = None) -> Any:
    """A dataclass field with a documented range (`low`/`high`, `low_open` excludes `low`)."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "choices": choices}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults: dataclasses here are frozen")
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and (value < low or (meta.get("low_open") and value == low)):
                bound = f"> {low}" if meta.get("low_open") else f">= {low}"
                raise UsageError(f"{owner}: '{f.name}'={value} is out of range; it must be {bound}"
                                 + (f" and <= {high}" if high is not None else ""))
            if high is not None and value > high:
                raise UsageError(f"{owner}: '{f.name}'={value} is out of range; it must be <= {high}")


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for each field, for `bpsuite list` and the README."""
    return [(f.name, f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
