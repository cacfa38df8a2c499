"""Gradient-output sparsity of backprop (Sarma et al. 2021): exact MAC counting (`macs`), step
hooks (`probes`) and the `bp-sparsity` method (`method`)."""

from suite.methods.sparsity.method import BPSparsity, BPSparsityHParams, instrumented_steps

__all__ = ["BPSparsity", "BPSparsityHParams", "instrumented_steps"]
