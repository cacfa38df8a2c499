"""User-facing errors. Every one of them is raised before any compute and exits with status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class UsageError(ValueError):
    """Bad input from the user: an unknown name, a malformed override, an out-of-range value."""


def nearest(name: str, valid: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.4)
    return matches[0] if matches else None


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UsageError:
    valid = sorted(valid)
    hint = nearest(name, valid)
    did_you_mean = f" Did you mean '{hint}'?" if hint else ""
    return UsageError(f"unknown {kind} '{name}'.{did_you_mean} Valid {kind}s: {', '.join(valid)}")


def lookup(kind: str, registry: Mapping[str, T], name: str) -> T:
    """Registry lookup that fails with the valid names and the nearest match."""
    if name not in registry:
        raise unknown_name(kind, name, registry)
    return registry[name]


class StoreError(RuntimeError):
    """The tracking store failed while a command ran (a full disk, a read-only file, a lock held
    past the retries): the command ends with this message and exit status 1, not a traceback."""
