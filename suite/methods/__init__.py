"""Method registry: a plain dict from name to Method class. Add a method by adding a line here."""

from __future__ import annotations

from suite.methods.base import Context, Method
from suite.methods.bp import BP

METHODS: dict[str, type[Method]] = {
    BP.name: BP,
}

__all__ = ["METHODS", "Context", "Method"]
