"""LoCal+SGD: localized learning with learning-mode selection (see `method.py`)."""

from suite.methods.local.method import LocalHParams, LocalSGD

__all__ = ["LocalHParams", "LocalSGD"]
