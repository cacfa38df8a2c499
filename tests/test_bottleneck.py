"""Launay et al.'s bottleneck network and the DFA options that reproduce their wiring, against
independent computations: masked gradients equal the plain layer's gradients times the masks; at
k = 800 the network is an ordinary MLP; the masks do not change while training; a shared feedback
matrix gives equal-sized points the same signal; and the new option leaves logged cells' hashes
alone at its default."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

from suite.config import Cell, resolve
from suite.errors import UsageError
from suite.methods.feedback import DFA
from suite.methods.feedback.matrices import build_bank
from suite.models import build_model, check_model_name
from suite.models.bottleneck import GradientMaskedLinear
from tests.conftest import make_context, random_bundle


def test_masked_layer_gradients_are_the_plain_gradients_times_the_masks():
    torch.manual_seed(0)
    layer = GradientMaskedLinear(6, 5, keep=0.5)
    x = torch.randn(4, 6, requires_grad=True)
    upstream = torch.randn(4, 5)
    (layer(x) * upstream).sum().backward()

    w, b = layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    x_plain = x.detach().clone().requires_grad_()
    (F.linear(x_plain, w, b) * upstream).sum().backward()

    torch.testing.assert_close(layer.weight.grad, w.grad * layer.mask_weight)
    torch.testing.assert_close(layer.bias.grad, b.grad * layer.mask_bias)
    torch.testing.assert_close(x.grad, x_plain.grad * layer.mask_input[:4])
    assert 0 < layer.mask_weight.mean() < 1  # keep 0.5: some of each


def test_keep_rate_follows_k():
    torch.manual_seed(0)
    model = build_model("bottleneck:80", (1, 28, 28), 10)
    masked = [m for m in model.modules() if isinstance(m, GradientMaskedLinear)]
    assert len(masked) == 1
    assert masked[0].mask_weight.mean().item() == pytest.approx(0.1, abs=0.01)  # 640k entries


def test_k800_is_an_ordinary_mlp():
    """At k = 800 every mask is 1, so BP through the bottleneck network equals BP through the same
    weights in plain linear layers."""
    torch.manual_seed(0)
    model = build_model("bottleneck:800", (1, 28, 28), 10)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()

    params = [(m.weight.detach().clone().requires_grad_(), m.bias.detach().clone().requires_grad_()) for m in layers]
    h = x.flatten(1)
    for i, (w, b) in enumerate(params):
        h = F.linear(h, w, b)
        h = torch.tanh(h) if i < len(params) - 1 else h
    F.cross_entropy(h, y).backward()
    for m, (w, b) in zip(layers, params):
        torch.testing.assert_close(m.weight.grad, w.grad)
        torch.testing.assert_close(m.bias.grad, b.grad)


def test_masks_stay_fixed_while_dfa_trains():
    data = random_bundle()
    torch.manual_seed(0)
    model = build_model("bottleneck:28", data.input_shape, data.num_classes)
    masked = next(m for m in model.modules() if isinstance(m, GradientMaskedLinear))
    before = [t.clone() for t in (masked.mask_input, masked.mask_weight, masked.mask_bias)]
    method = DFA(DFA.HParams(lr=0.05, granularity="block", feedback_shared=True, align_samples=0))
    method.setup(model, make_context(data))
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    for old, new in zip(before, (masked.mask_input, masked.mask_weight, masked.mask_bias)):
        assert torch.equal(old, new)


def test_masked_entries_never_learn_without_weight_decay():
    data = random_bundle()
    torch.manual_seed(0)
    model = build_model("bottleneck:28", data.input_shape, data.num_classes)
    masked = next(m for m in model.modules() if isinstance(m, GradientMaskedLinear))
    start = masked.weight.detach().clone()
    method = DFA(DFA.HParams(lr=0.05, weight_decay=0.0, granularity="block", align_samples=0))
    method.setup(model, make_context(data))
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    changed = masked.weight.detach() != start
    assert changed.any()
    assert not (changed & (masked.mask_weight == 0)).any()


def test_shared_feedback_gives_equal_points_the_same_signal():
    gen = torch.Generator().manual_seed(0)
    bank = build_bank([(800,), (800,), (300,)], [False] * 3, 10, "gaussian", gen, shared=True)
    error = torch.randn(4, 10)
    a, b, c = bank.project(error)
    torch.testing.assert_close(a, b)
    # the smaller point takes the first rows of the same matrix, rescaled to its own size
    torch.testing.assert_close(c, a[:, :300] * (800 / 300) ** 0.5)
    separate = build_bank([(800,), (800,)], [False] * 2, 10, "gaussian", torch.Generator().manual_seed(0))
    a2, b2 = separate.project(error)
    assert not torch.allclose(a2, b2)


def test_bad_bottleneck_spec_names_the_valid_range():
    for spec in ("bottleneck:0", "bottleneck:801", "bottleneck:wide", "bottleneck"):
        with pytest.raises(UsageError, match="1..800"):
            check_model_name(spec)


def test_option_at_its_default_leaves_the_cell_hash_alone():
    """`feedback_shared` was added after dfa runs were logged: at its default it is not hashed,
    so the hash is the one computed without the field; set, it is a different cell."""
    cfg = resolve(Cell("dfa", "mlp", "mnist", 0, "quick"))
    payload = cfg.as_dict()
    payload.pop("overrides")
    payload["hparams"].pop("feedback_shared")
    payload["train"].pop("per_class")  # a run setting added later on the same terms
    expected = hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.cell_hash == expected
    shared = resolve(Cell("dfa", "mlp", "mnist", 0, "quick").with_overrides(feedback_shared=True))
    assert shared.cell_hash != cfg.cell_hash
    assert dataclasses.asdict(shared.hparams)["feedback_shared"] is True
