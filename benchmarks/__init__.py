"""Benchmarks run by `nox -s bench`: each module measures ratios side by side in one run."""
