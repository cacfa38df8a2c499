"""Sign-symmetric feedback (usf, brsf, frsf) against independent computations: with |W| as
magnitudes the rule is BP exactly; a hand-computed uSF update; the feedback's signs are the
weights' signs at every step; frsf's magnitudes are fixed, brsf's redrawn every batch, both from
the Xavier law BioTorch uses."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from suite.methods.feedback import BRSF, FRSF, USF
from suite.methods.feedback.matrices import xavier_bound
from suite.models import build_model
from tests.conftest import make_context, random_bundle

PLAIN_SGD = dict(momentum=0.0, weight_decay=0.0, schedule="constant")


def _setup(method, model_name, data, seed=0):
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    method.setup(model, make_context(data, seed=seed))
    return model


class WeightMagnitudes(USF):
    """uSF with |W| as the magnitudes: B = |W| ⊙ sign(W) = W, i.e. BP."""

    def magnitudes(self):
        return [layer.weight.detach().abs() for layer in self.layers]


@pytest.mark.parametrize("model_name", ["lenet", "cnn", "resnet20"])
def test_sign_symmetry_with_weight_magnitudes_is_bp(model_name):
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    method = WeightMagnitudes(WeightMagnitudes.HParams(align_samples=0))
    model = _setup(method, model_name, data)
    twin = copy.deepcopy(model)
    batch = next(data.train_batches(0, 0))
    method.rebuild()
    model.zero_grad(set_to_none=True)
    with method.mode():
        F.cross_entropy(model(batch.x), batch.y).backward()
    twin.zero_grad(set_to_none=True)
    F.cross_entropy(twin(batch.x), batch.y).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    # and with its own uniform magnitudes the hidden layers do not get BP's gradient
    usf = USF(USF.HParams(align_samples=0))
    mine = _setup(usf, model_name, data)
    usf.rebuild()
    mine.zero_grad(set_to_none=True)
    with usf.mode():
        F.cross_entropy(mine(batch.x), batch.y).backward()
    assert not torch.allclose(mine.layers()[1].weight.grad, twin.layers()[1].weight.grad)


def test_usf_one_hidden_layer_equals_hand_computed_update():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    lr = 0.05
    method = USF(USF.HParams(lr=lr, align_samples=0, **PLAIN_SGD))
    model = _setup(method, "mlp:12", data)
    lin1, head = model.blocks[0].body[0], model.head
    w1, b1, w2, b2 = (t.detach().clone() for t in (lin1.weight, lin1.bias, head.weight, head.bias))
    batch = next(data.train_batches(0, 0))
    x, y = batch.x.flatten(1), batch.y
    # uSF by hand: B2 = s·sign(W2), s = sqrt(2/(fan_in+fan_out)) (std of Xavier-uniform)
    s = math.sqrt(2.0 / (12 + 10))
    a1 = x @ w1.t() + b1
    h1 = a1.clamp(min=0)
    z = h1 @ w2.t() + b2
    e = (z.softmax(1) - F.one_hot(y, 10).float()) / len(y)
    d1 = (e @ (s * torch.sign(w2))) * (a1 > 0).float()
    expected = {"w1": w1 - lr * d1.t() @ x, "b1": b1 - lr * d1.sum(0), "w2": w2 - lr * e.t() @ h1,
                "b2": b2 - lr * e.sum(0)}
    method.train_step(batch)
    got = {"w1": lin1.weight, "b1": lin1.bias, "w2": head.weight, "b2": head.bias}
    for k in expected:
        torch.testing.assert_close(got[k].detach(), expected[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.parametrize("cls", [USF, BRSF, FRSF])
def test_feedback_signs_are_the_weights_signs_at_every_step(cls):
    data = random_bundle(n_train=64, n_test=8, batch_size=16)
    method = cls(cls.HParams(lr=0.05, align_samples=0))
    _setup(method, "lenet", data)
    changed = False
    for batch in data.train_batches(0, 0):
        before = [layer.weight.detach().clone() for layer in method.layers]
        method.train_step(batch)
        for w, b in zip(before, method.feedback):  # the B this step used, against the W it read
            assert torch.equal(torch.sign(b), torch.sign(w))
        changed |= any(not torch.equal(torch.sign(w), torch.sign(layer.weight)) for w, layer in zip(before, method.layers))
    assert changed, "some weight changed sign during the epoch, so the check followed the signs"


def _magnitudes_per_step(cls, steps=3):
    data = random_bundle(n_train=16 * steps, n_test=8, batch_size=16)
    method = cls(cls.HParams(lr=0.05, align_samples=0))
    _setup(method, "lenet", data)
    seen = []
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
        seen.append([b.abs() for b in method.feedback])
    return method, seen


def test_frsf_magnitudes_are_fixed_brsf_redrawn_usf_uniform():
    frsf, frsf_seen = _magnitudes_per_step(FRSF)
    brsf, brsf_seen = _magnitudes_per_step(BRSF)
    usf, usf_seen = _magnitudes_per_step(USF)
    for step in frsf_seen[1:]:
        for a, b in zip(frsf_seen[0], step):
            nonzero = a != 0  # a weight that is exactly 0 has sign 0
            assert torch.equal(a[nonzero], b[nonzero])
    for prev, step in zip(brsf_seen, brsf_seen[1:]):
        assert all(not torch.equal(a, b) for a, b in zip(prev, step))
    for layer, mags in zip(usf.layers, usf_seen[-1]):
        bound = xavier_bound(tuple(layer.weight.shape))
        assert torch.allclose(mags, torch.full_like(mags, bound / math.sqrt(3)))  # the Xavier std
    # brsf and frsf draw |M| with M ~ Xavier-uniform: U(0, bound), mean bound/2
    for method, seen in ((frsf, frsf_seen), (brsf, brsf_seen)):
        for layer, mags in zip(method.layers, seen[-1]):
            bound = xavier_bound(tuple(layer.weight.shape))
            assert float(mags.max()) <= bound
            if mags.numel() > 1000:
                assert abs(float(mags.mean()) - bound / 2) < 0.05 * bound


def test_frsf_magnitudes_reproducible_from_seed():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    a, b, c = (FRSF(FRSF.HParams(align_samples=0)) for _ in range(3))
    _setup(a, "cnn", data, seed=1)
    _setup(b, "cnn", data, seed=1)
    _setup(c, "cnn", data, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.fixed, b.fixed))
    assert not torch.equal(a.fixed[0], c.fixed[0])


def test_kaiming_magnitudes_follow_pytorch_default_init():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    method = USF(USF.HParams(magnitude="kaiming", align_samples=0))
    model = _setup(method, "lenet", data)
    for layer, fb in zip(model.layers(), method.feedback):
        fan_in = layer.weight[0].numel()
        assert torch.allclose(fb.abs(), torch.full_like(fb, 1 / math.sqrt(3 * fan_in)))
