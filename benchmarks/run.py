"""`nox -s bench`: run every benchmark module's main() (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks

SKIP = {"common", "run"}


def main(names: list[str]) -> int:
    modules = names or sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name not in SKIP)
    for name in modules:
        print(f"\n== benchmarks.{name} ==", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
