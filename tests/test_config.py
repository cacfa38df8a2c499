"""Config resolution: defaults < profile < overrides; the cell hash covers resolved values."""

from __future__ import annotations

import pytest

from suite.config import PROFILES, Cell, resolve
from suite.errors import UsageError
from suite.methods.optim import OptimHParams, lr_factor


def test_profile_then_overrides():
    cfg = resolve(Cell("bp", "mlp", "mnist", 0, "smoke"))
    assert cfg.train.epochs == PROFILES["smoke"]["epochs"] and cfg.hparams.lr == 0.1
    cfg = resolve(Cell("bp", "mlp", "mnist", 0, "smoke").with_overrides(epochs=4, lr="0.02", milestones="0.3,0.6"))
    assert cfg.train.epochs == 4 and cfg.hparams.lr == 0.02 and cfg.hparams.milestones == (0.3, 0.6)


def test_hash_changes_with_any_resolved_value_and_only_then():
    base = Cell("bp", "mlp", "mnist", 0, "smoke")
    h = resolve(base).cell_hash
    assert resolve(base.with_overrides(lr=0.1)).cell_hash == h  # same resolved value = same cell
    assert resolve(base.with_overrides(lr=0.2)).cell_hash != h
    assert resolve(Cell("bp", "mlp", "mnist", 1, "smoke")).cell_hash != h
    assert resolve(Cell("bp", "mlp", "mnist", 0, "quick")).cell_hash != h


def test_negative_seed_is_rejected():
    with pytest.raises(UsageError, match="seed"):
        resolve(Cell("bp", "mlp", "mnist", -1, "smoke"))


def test_he_et_al_step_schedule_and_cosine():
    hp = OptimHParams()
    assert (hp.optimizer, hp.lr, hp.momentum, hp.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    factors = [lr_factor(hp, s, 100, 10) for s in (0, 49, 50, 74, 75, 99)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = OptimHParams(schedule="cosine")
    assert lr_factor(cos, 0, 100, 10) == 1 and lr_factor(cos, 50, 100, 10) == pytest.approx(0.5)
    warm = OptimHParams(warmup_epochs=1)
    assert lr_factor(warm, 4, 100, 10) == pytest.approx(0.5)
