"""What every run records about where it ran: commit, package versions, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

import torch


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "torch_build": torch.__version__}
    for pkg in ("torch", "torchvision", "timm", "mlflow", "numpy", "pandas", "seaborn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name ("model name" in /proc/cpuinfo on Linux), else what the platform
    module knows: two machines with the same platform string can still differ here."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch to (e.g. AVX2, AVX512): results of the same
    code can differ in the last bits between capabilities."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def hardware(device: torch.device | None = None) -> dict[str, str]:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": cpu_capability(),
            "cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads())}
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
