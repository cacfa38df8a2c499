"""Feedback-alignment family (fa, dfa, bdfa, hybrid-dfa) against independent computations:
a hand-computed DFA update, exact equivalence to BP in the limits where it must hold, the
storage and reproducibility of the feedback, and the absence of backward-data convolutions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from suite.methods import METHODS
from suite.methods.feedback import BDFA, DFA, FA, HybridDFA
from suite.methods.feedback.engine import feedback_forward
from suite.methods.feedback.matrices import draw
from suite.models import build_model
from tests.conftest import make_context, random_bundle

PLAIN_SGD = dict(momentum=0.0, weight_decay=0.0, schedule="constant")


def _setup(method, model_name, data, seed=0):
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    method.setup(model, make_context(data, seed=seed))
    return model


def _bp_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_dfa_one_hidden_layer_equals_hand_computed_update():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    lr = 0.05
    method = DFA(DFA.HParams(lr=lr, align_samples=0, **PLAIN_SGD))
    model = _setup(method, "mlp:12", data)
    lin1, head = model.blocks[0].body[0], model.head
    w1, b1, w2, b2 = (t.detach().clone() for t in (lin1.weight, lin1.bias, head.weight, head.bias))
    B = method.bank.dense(0)  # (12, 10): the one hidden layer's feedback
    batch = next(data.train_batches(0, 0))
    x, y = batch.x.flatten(1), batch.y

    # Nøkland's rule by hand: e = (softmax(z) - onehot)/N, δ1 = (B e) ⊙ relu'(a1)
    a1 = x @ w1.t() + b1
    h1 = a1.clamp(min=0)
    z = h1 @ w2.t() + b2
    e = (z.softmax(1) - F.one_hot(y, 10).float()) / len(y)
    d1 = (e @ B.t()) * (a1 > 0).float()
    expected = {"w1": w1 - lr * d1.t() @ x, "b1": b1 - lr * d1.sum(0),
                "w2": w2 - lr * e.t() @ h1, "b2": b2 - lr * e.sum(0)}

    method.train_step(batch)
    got = {"w1": lin1.weight, "b1": lin1.bias, "w2": head.weight, "b2": head.bias}
    for k in expected:
        torch.testing.assert_close(got[k].detach(), expected[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize("model_name", ["cnn", "resnet20"])
def test_dfa_head_gradient_equals_bp(model_name):
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    method = DFA(DFA.HParams(align_samples=0))
    model = _setup(method, model_name, data)
    twin = copy.deepcopy(model)
    batch = next(data.train_batches(0, 0))
    model.zero_grad(set_to_none=True)
    logits, points, _ = feedback_forward(model, batch.x, method.feedback_plan, method.bank)
    F.cross_entropy(logits, batch.y).backward()
    bp = _bp_grads(twin, batch.x, batch.y)
    assert len(points) > 1
    for name, p in model.head.named_parameters():
        torch.testing.assert_close(p.grad, bp[f"head.{name}"], atol=1e-6, rtol=1e-5)
    # and the hidden layers do not get BP's gradient (the signal is the random projection)
    first = model.layers()[0].weight
    assert not torch.allclose(first.grad, bp["stem.0.weight" if model_name == "resnet20" else "blocks.0.body.0.weight"])


@pytest.mark.parametrize("model_name", ["cnn", "resnet20", "mlp"])
def test_fa_with_feedback_equal_to_weights_is_bp(model_name):
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    method = FA(FA.HParams(align_samples=0))
    model = _setup(method, model_name, data)
    method.feedback = [layer.weight.detach().clone() for layer in method.layers]
    twin = copy.deepcopy(model)
    batch = next(data.train_batches(0, 0))
    model.zero_grad(set_to_none=True)
    with method.mode():
        loss = F.cross_entropy(model(batch.x), batch.y)
    loss.backward()
    bp = _bp_grads(twin, batch.x, batch.y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, bp[name], atol=1e-6, rtol=1e-5, msg=name)
    # and with its own random feedback it is not BP
    method2 = FA(FA.HParams(align_samples=0))
    _setup(method2, model_name, data)
    assert not torch.allclose(method2.feedback[0], method2.layers[0].weight)


@pytest.mark.parametrize("model_name", ["resnet20", "cnn"])
def test_modulewise_with_one_module_is_bp(model_name):
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    hybrid = HybridDFA(HybridDFA.HParams(preset="modulewise", modules=1, align_samples=8))
    bp = METHODS["bp"]()
    model = _setup(hybrid, model_name, data)
    twin = _setup(bp, model_name, data)
    for batch in data.train_batches(0, 0):
        a, b = hybrid.train_step(batch), bp.train_step(batch)
        assert torch.equal(a["loss"], b["loss"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    # the alignment probe, on a method that is BP, reads perfect alignment everywhere
    metrics = hybrid.end_epoch(0)
    means = [v for k, v in metrics.items() if k.startswith("align/") and k.endswith("_mean")]
    assert means and all(abs(m - 1.0) < 1e-6 for m in means)


def test_modulewise_splits_into_modules_and_validates_count():
    from suite.errors import UsageError
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, 10)
    plan = HybridDFA(HybridDFA.HParams(preset="modulewise", modules=3)).plan(model)
    assert plan.boundary == ("bp",) * 3 + ("dfa",) + ("bp",) * 2 + ("dfa",) + ("bp",) * 3  # stages of resnet20
    with pytest.raises(UsageError):
        HybridDFA(HybridDFA.HParams(preset="modulewise", modules=11)).validate(model)


def test_bdfa_feedback_is_int8_plus_minus_one_and_fixed_and_reproducible():
    data = random_bundle(n_train=32, n_test=8, batch_size=16)
    method = BDFA(BDFA.HParams(align_samples=0))
    _setup(method, "cnn", data, seed=3)
    m = method.bank.matrix
    assert m.dtype == torch.int8 and set(m.unique().tolist()) == {-1, 1}
    before = m.clone()
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    assert torch.equal(method.bank.matrix, before)  # fixed across steps
    again = BDFA(BDFA.HParams(align_samples=0))
    _setup(again, "cnn", data, seed=3)
    assert torch.equal(again.bank.matrix, before)  # reproducible from the seed
    other = BDFA(BDFA.HParams(align_samples=0))
    _setup(other, "cnn", data, seed=4)
    assert not torch.equal(other.bank.matrix, before)


def test_fa_feedback_reproducible_from_seed():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    a, b = FA(FA.HParams(align_samples=0)), FA(FA.HParams(align_samples=0))
    _setup(a, "cnn", data, seed=1)
    _setup(b, "cnn", data, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.feedback, b.feedback))


def test_sparse_feedback_pattern_keeps_every_unit_connected():
    m = draw("sparse", 64, 10, torch.Generator().manual_seed(0), stride=2)
    assert ((m != 0).sum(1) >= 1).all()
    assert abs((m != 0).float().mean().item() - 0.5) < 1e-6


class ConvBackwardLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(list(args[-1]))
        return func(*args, **(kwargs or {}))


def test_layerwise_dfa_runs_no_backward_data_convolution():
    data = random_bundle(n_train=8, n_test=8, batch_size=8)
    for method, expect_data in ((DFA(DFA.HParams(align_samples=0)), False), (METHODS["bp"](), True)):
        model = _setup(method, "resnet20", data)
        batch = next(data.train_batches(0, 0))
        with ConvBackwardLog() as log:
            method.train_step(batch)
        assert len(log.masks) == len(model.layers()) - 1  # every conv computes its weight gradient
        assert all(m[1] for m in log.masks)
        assert any(m[0] for m in log.masks) == expect_data


@pytest.mark.parametrize("model_name", ["mlp", "cnn", "resnet20"])
@pytest.mark.parametrize("name,hp", [("dfa", {"granularity": "block"}), ("hybrid-dfa", {"preset": "modulewise"}),
                                     ("hybrid-dfa", {"preset": "conv-dfa+fc-bp", "feedback": "sparse"}),
                                     ("dfa", {"feedback": "uniform"})])
def test_variants_train_a_few_finite_steps(model_name, name, hp):
    data = random_bundle(n_train=32, n_test=8, batch_size=16)
    cls = METHODS[name]
    method = cls(cls.HParams(**hp, align_samples=8))
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    if method.check(model, data):
        return
    method.setup(model, make_context(data))
    for batch in data.train_batches(0, 0):
        assert torch.isfinite(method.train_step(batch)["loss"])
    metrics = method.end_epoch(0)
    assert "align/mean" in metrics and all(abs(v) <= 1.0 + 1e-9 for k, v in metrics.items() if k.endswith("_mean"))
