"""LoCal+SGD (`local`): schedules, the block boundary, the BP limit, the grad-free prefix and the
local rule against a hand computation."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from suite.methods.bp import BP, BPHParams
from suite.methods.local import LocalHParams, LocalSGD, boundary, hebbian, schedules
from suite.models import SequentialBlock, StagedModel, build_model
from tests.conftest import make_context, random_bundle

# -- schedules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", schedules.STATIC)
def test_static_schedules_are_monotone_bounded_and_reach_c1(kind):
    for epochs, layers, c1, c2 in itertools.product([1, 3, 10, 200], [1, 5, 22], [0.0, 0.3, 0.5, 1.0],
                                                    [0.0, 0.25, 0.9]):
        n = [schedules.static_layers(kind, e, epochs, layers, c1, c2) for e in range(epochs)]
        assert all(0 <= v <= layers for v in n)
        assert all(a <= b for a, b in zip(n, n[1:])), (kind, epochs, layers, c1, c2, n)
        assert n[-1] == schedules.max_local_layers(c1, layers)  # all reach c1·L at the last epoch
        e0 = schedules.start_epoch(c2, epochs)
        assert all(v == 0 for v in n[:e0])  # nothing local before c2·E_max
        if c1 == 0:
            assert not any(n)


def test_schedule_shapes_order_linear_over_quadratic_over_exponential():
    areas = {k: sum(schedules.static_layers(k, e, 50, 22, 0.5, 0.0) for e in range(50)) for k in schedules.STATIC}
    assert areas["linear"] > areas["quadratic"] > areas["exponential"] > 0


def test_dynamic_selector_shifts_only_below_alpha_times_the_running_average():
    sel = schedules.DynamicSelector(alpha=0.5, shift_layers=3, ema_decay=0.5)
    shift, ref = sel.observe({0: 10.0, 1: 4.0}, 0)
    assert not shift and math.isnan(ref)  # no history yet: no shift
    assert sel.avg == {0: 10.0, 1: 4.0}
    shift, ref = sel.observe({0: 6.0, 1: 4.0}, 0)  # 6 >= 0.5 * 10
    assert (shift, ref) == (False, 10.0) and sel.avg[0] == 8.0
    shift, ref = sel.observe({0: 3.9, 1: 1.0}, 0)  # 3.9 < 0.5 * 8
    assert shift and ref == 8.0
    shift, ref = sel.observe({1: 1.0}, 1)  # the new transition layer compares with its own history
    assert ref == 2.5 and shift  # avg of layer 1: 4, 4, then 0.5*4+0.5*1 = 2.5; 1.0 < 1.25
    assert sel.target(3) == 6


# -- layers and the boundary -------------------------------------------------------------------

def test_resnet20_cuts_count_shortcut_convs_with_their_block_and_never_the_head():
    model = build_model("resnet20", (3, 32, 32), 10)
    layers = model.layers()
    assert len(layers) == 22  # 19 convs + 2 shortcut 1x1 convs + the linear head
    cuts = boundary.cuts(model)
    counts = [c.layers for c in cuts]
    assert counts == [0, 1, 3, 5, 7, 10, 12, 14, 17, 19, 21]  # blocks 3 and 6 hold a shortcut conv
    assert cuts[-1].units == 1 + len(model.blocks) and cuts[-1].layers == len(layers) - 1
    assert boundary.round_down(cuts, 11) == boundary.Cut(5, 10)  # rounded down to a block boundary
    assert boundary.round_down(cuts, 0) == boundary.Cut(0, 0)
    assert boundary.next_cut(cuts, boundary.Cut(5, 10)) == boundary.Cut(6, 12)


def test_cnn_with_empty_stem_starts_with_nothing_localized():
    cuts = boundary.cuts(build_model("cnn", (1, 28, 28), 10))
    assert cuts[0] == boundary.Cut(0, 0) and [c.layers for c in cuts] == [0, 1, 2, 3, 4]


def test_single_block_model_without_head_layer_is_refused_with_a_reason():
    model = StagedModel(nn.Identity(), [SequentialBlock(nn.Flatten(), nn.Linear(4, 3))], nn.Identity())
    data = random_bundle(n_train=8, n_test=8, shape=(1, 2, 2), batch_size=4)
    assert isinstance(LocalSGD().skip_reason(model, data), str)
    assert LocalSGD(LocalHParams(local_schedule="none")).skip_reason(model, data) is None


# -- the method --------------------------------------------------------------------------------

def _train(method, model, data, epochs):
    method.setup(model, make_context(data, epochs=epochs))
    logs = []
    for epoch in range(epochs):
        for batch in data.train_batches(0, epoch):
            method.train_step(batch)
        logs.append(method.end_epoch(epoch))
    method.close()
    return logs


@pytest.mark.parametrize("hp", [LocalHParams(local_schedule="none"),
                                LocalHParams(local_schedule="linear", c1=0.0, c2=0.0),
                                LocalHParams(local_schedule="dynamic", c1=0.0)])
def test_without_local_layers_the_method_is_exactly_bp(hp):
    data = random_bundle(n_train=48, n_test=8, batch_size=16)
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, data.num_classes)
    twin = copy.deepcopy(model)
    opt = dict(lr=0.05)
    local = LocalSGD(hp.__class__(**{**hp.__dict__, **opt}))
    logs = _train(local, model, data, epochs=3)
    _train(BP(BPHParams(**opt)), twin, data, epochs=3)
    assert all(log["local/transition_layer"] == 0 for log in logs)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


def test_each_layer_switches_once_and_the_boundary_only_moves_deeper():
    data = random_bundle(n_train=32, n_test=8, batch_size=16)
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, data.num_classes)
    logs = _train(LocalSGD(LocalHParams(local_schedule="linear", c1=0.6, c2=0.0)), model, data, epochs=5)
    ts = [log["local/transition_layer"] for log in logs] + [logs[-1]["local/next_transition_layer"]]
    assert ts == sorted(ts) and ts[-1] > 0
    assert ts[-1] <= math.floor(0.6 * len(model.layers()))
    valid = {c.layers for c in boundary.cuts(model)}
    assert set(ts) <= valid  # always on a block boundary


def test_dynamic_schedule_shifts_by_at_least_one_block_when_updates_shrink():
    data = random_bundle(n_train=32, n_test=8, batch_size=16)
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes)
    method = LocalSGD(LocalHParams(local_schedule="dynamic", alpha=0.5, l_shift=0.01, c1=0.8, lr=0.02))
    method.setup(model, make_context(data, epochs=3))
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    first = method.end_epoch(0)
    assert first["local/next_transition_layer"] == 0  # no history yet
    # an epoch with no SGD step: the transition layer's update norm is 0 < alpha * average
    second = method.end_epoch(1)
    assert second["local/update_norm"] == 0.0 and second["local/next_transition_layer"] == 1
    method.close()


def test_local_prefix_gets_no_gradient_no_backward_and_bn_is_frozen_but_tracks_statistics():
    data = random_bundle(n_train=16, n_test=8, shape=(3, 16, 16), batch_size=16, dataset="cifar10")
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, data.num_classes)
    method = LocalSGD(LocalHParams(local_schedule="none", local_lr=0.05, weak_supervision=False))
    method.setup(model, make_context(data))
    method._move_to(boundary.round_down(method.cuts, 11))
    prefix = nn.ModuleList(method.units[:method.cut.units])
    suffix = nn.ModuleList(method.units[method.cut.units:] + [model.head])
    before = copy.deepcopy(prefix.state_dict())
    backward_calls = []
    for module in prefix.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            module.register_full_backward_hook(lambda *a: backward_calls.append(1))
    batch = next(data.train_batches(0, 0))
    method.train_step(batch)
    assert all(p.grad is None for p in prefix.parameters())
    assert all(p.grad is not None for p in suffix.parameters())
    assert not backward_calls
    after = prefix.state_dict()
    for name, value in before.items():
        if name.endswith("weight") and value.dim() == 4:  # conv: moved by the local rule, norms kept
            assert not torch.equal(value, after[name]), name
            torch.testing.assert_close(value.flatten(1).norm(dim=1), after[name].flatten(1).norm(dim=1))
        elif "running" in name:
            assert not torch.equal(value, after[name]), name  # BN statistics track the new weights
        elif "num_batches" not in name:
            assert torch.equal(value, after[name]), name  # BN affine params frozen
    method.close()


def test_local_prefix_keeps_no_activations_for_backward():
    from suite.measure import saved_tensor_bytes
    data = random_bundle(n_train=16, n_test=8, shape=(3, 16, 16), batch_size=16, dataset="cifar10")
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, data.num_classes)
    batch = next(data.train_batches(0, 0))
    saved = {}
    for n_local in (0, 11):
        method = LocalSGD(LocalHParams(local_schedule="none"))
        method.setup(copy.deepcopy(model), make_context(data))
        method._move_to(boundary.round_down(method.cuts, n_local))
        hooks, seen = saved_tensor_bytes()
        with hooks:
            method.train_step(batch)
        saved[n_local] = sum(seen.values())
    assert saved[11] < 0.6 * saved[0]  # the first 10 of 22 layers hold the large 16-channel maps


def test_eval_forward_does_not_apply_the_local_rule():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    model = build_model("cnn", data.input_shape, data.num_classes)
    method = LocalSGD(LocalHParams(local_schedule="none"))
    method.setup(model, make_context(data))
    method._move_to(boundary.round_down(method.cuts, 2))
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        method.predict(next(data.eval_batches("test")).x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    method.close()


def test_weak_supervision_pauses_local_updates_when_the_loss_rises():
    data = random_bundle(n_train=16, n_test=8, batch_size=16)
    method = LocalSGD(LocalHParams(loss_fast=0.5, loss_slow=0.9, supervision_max=2.0))
    method.setup(build_model("mlp", data.input_shape, data.num_classes), make_context(data))
    assert float(method._scale) == 1.0
    for loss in [2.0, 1.5, 1.0]:  # falling: slow/fast > 1
        method._supervise(torch.tensor(loss))
    assert 1.0 < float(method._scale) <= 2.0
    for loss in [3.0, 4.0]:  # rising: paused
        method._supervise(torch.tensor(loss))
    assert float(method._scale) == 0.0


# -- the local rule against a hand computation --------------------------------------------------

def _hand_conv_hebbian(x, y, kernel, stride, padding):
    """H[o,c,i,j] = Σ_b Σ_p,q y[b,o,p,q] · x_pad[b,c,p·s+i,q·s+j] / (B·P·Q), by explicit loops."""
    B, C, _, _ = x.shape
    _, n_out, P, Q = y.shape
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    h = torch.zeros(n_out, C, kernel, kernel, dtype=torch.float64)
    for o, c, i, j in itertools.product(range(n_out), range(C), range(kernel), range(kernel)):
        total = 0.0
        for b, p, q in itertools.product(range(B), range(P), range(Q)):
            total += float(y[b, o, p, q]) * float(xp[b, c, p * stride + i, q * stride + j])
        h[o, c, i, j] = total / (B * P * Q)
    return h


def test_conv_local_update_equals_a_hand_computed_one():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    y = conv(x).detach()
    hand = _hand_conv_hebbian(x, y, 3, 2, 1)
    torch.testing.assert_close(hebbian.hebbian_term(conv, x, y), hand)

    rate = 0.1
    w0 = conv.weight.detach().clone()
    expected = torch.empty_like(w0)
    for o in range(3):  # W_o + rate·‖W_o‖·H_o/‖H_o‖, rescaled to ‖W_o‖
        w_norm = math.sqrt(float((w0[o] ** 2).sum()))
        moved = w0[o] + rate * w_norm * hand[o] / math.sqrt(float((hand[o] ** 2).sum()))
        expected[o] = moved * w_norm / math.sqrt(float((moved ** 2).sum()))
    hebbian.local_update(conv, x, y, rate)
    torch.testing.assert_close(conv.weight.detach(), expected)


def test_linear_local_update_is_the_outer_product_of_output_and_input():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    y = lin(x).detach()
    hand = sum(torch.outer(y[b], x[b]) for b in range(5)) / 5
    torch.testing.assert_close(hebbian.hebbian_term(lin, x, y), hand)
