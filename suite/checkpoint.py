"""Model checkpoints: plain state dicts, loaded with `weights_only=True` so that loading a file
never runs code from it (no arbitrary unpickling from an untrusted path)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return path


def load_checkpoint(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model
