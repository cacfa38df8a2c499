"""`nox -s bench`: run every benchmark module's main() (or the ones named on the command line),
each in a fresh interpreter, so no benchmark inherits another's process state (measured: `local`'s
epoch ratio read 0.78 right after the layer-parallel benchmark in one process, 0.67–0.71 alone)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time

import benchmarks

SKIP = {"common", "run"}


def main(names: list[str]) -> int:
    modules = names or sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name not in SKIP)
    failed = []
    for name in modules:
        print(f"\n== benchmarks.{name} ==", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", f"import benchmarks.{name} as b; b.main()"])
        if code:
            failed.append(name)
            print(f"benchmarks.{name} exited with code {code}", flush=True)
        print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
