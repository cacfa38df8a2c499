"""bp-sparsity: exact MAC counts against brute-force loops, limits (no zeros, all zeros), the
literal conv_transpose/conv2d_weight formulas, and identical training to plain BP."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite.methods.bp import BP, BPHParams
from suite.methods.sparsity import BPSparsity, BPSparsityHParams
from suite.methods.sparsity.macs import Geometry, count_macs, geometry_of
from suite.methods.sparsity.probes import ProbeRecorder
from suite.models import build_model
from tests.conftest import make_context, random_bundle


def brute_force(x_mask, dz_mask, w_mask, geo: Geometry, need_dx=True) -> dict[str, int]:
    """Walk every (n, c_out, h_out, w_out, c_in, k_h, k_w) product of the convolution."""
    n_, c_in, h, w = x_mask.shape
    _, c_out, h_out, w_out = dz_mask.shape
    left, _, top, _ = geo.padding
    cin_g, cout_g = c_in // geo.groups, c_out // geo.groups
    c = dict.fromkeys(("dense", "fwd", "dx_out", "dx_in", "dx_both", "dw"), 0)
    for n, co, ho, wo, ci_g, i, j in itertools.product(range(n_), range(c_out), range(h_out), range(w_out),
                                                        range(cin_g), range(geo.kernel[0]), range(geo.kernel[1])):
        hi = ho * geo.stride[0] - top + i * geo.dilation[0]
        wi = wo * geo.stride[1] - left + j * geo.dilation[1]
        if not (0 <= hi < h and 0 <= wi < w):
            continue  # a padding tap: no real product
        ci = co // cout_g * cin_g + ci_g
        x, dz, wt = bool(x_mask[n, ci, hi, wi]), bool(dz_mask[n, co, ho, wo]), bool(w_mask[co, ci_g, i, j])
        c["dense"] += 1
        c["fwd"] += x and wt
        c["dx_out"] += x and wt  # dX[n, ci, hi, wi] is computed only where X != 0
        c["dx_in"] += dz and wt
        c["dx_both"] += x and dz and wt
        c["dw"] += x and dz  # every weight gradient is needed, zero weights included
    if not need_dx:
        c["dx_out"] = c["dx_in"] = c["dx_both"] = 0
    return c


def masks(geo: Geometry, n=2, h=6, w=5, density=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h_out, w_out = geo.out_size(h, w)
    x = torch.rand(n, geo.in_channels, h, w, generator=gen) < density
    dz = torch.rand(n, geo.out_channels, h_out, w_out, generator=gen) < density
    wm = torch.rand(geo.out_channels, geo.in_channels // geo.groups, *geo.kernel, generator=gen) < 0.7
    return x, dz, wm


GEOMETRIES = {
    "3x3-pad1": Geometry(3, 4, (3, 3), (1, 1), (1, 1, 1, 1)),
    "3x3-stride2-groups2": Geometry(4, 6, (3, 3), (2, 2), (1, 1, 1, 1), groups=2),
    "depthwise-stride2": Geometry(4, 4, (3, 3), (2, 2), (1, 1, 1, 1), groups=4),
    "1x1": Geometry(5, 3, (1, 1)),
    "1x1-stride2": Geometry(3, 4, (1, 1), (2, 2)),
    "2x3-dilation2-nopad": Geometry(2, 3, (2, 3), (1, 1), (0, 0, 0, 0), (2, 1)),
    "asymmetric-same-pad": Geometry(2, 3, (3, 3), (2, 2), (0, 1, 0, 1)),
}


def as_dict(macs):
    return {k: round(getattr(macs, k)) for k in ("dense", "fwd", "dx_out", "dx_in", "dx_both", "dw")}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("weights", ["dense", "masked"])
def test_counts_equal_brute_force(name, weights):
    geo = GEOMETRIES[name]
    x, dz, wm = masks(geo)
    w_mask = wm if weights == "masked" else None
    expected = brute_force(x, dz, wm if weights == "masked" else torch.ones_like(wm), geo)
    assert as_dict(count_macs(x, dz, geo, w_mask=w_mask)) == expected
    no_dx = count_macs(x, dz, geo, w_mask=w_mask, need_dx=False)
    assert no_dx.dense_dx == 0 and no_dx.dx_both == 0 and no_dx.dw == expected["dw"]


def test_linear_counts_equal_brute_force():
    layer = nn.Linear(6, 4)
    geo = geometry_of(layer)
    gen = torch.Generator().manual_seed(1)
    x, dz = torch.rand(3, 6, generator=gen) < 0.4, torch.rand(3, 4, generator=gen) < 0.6
    expected = brute_force(x[:, :, None, None], dz[:, :, None, None], torch.ones(4, 6, 1, 1, dtype=torch.bool), geo)
    assert as_dict(count_macs(x, dz, geo)) == expected
    # by hand: dense = N·C_in·C_out, dw = Σ_n nnz(x_n)·nnz(dz_n)
    assert expected["dense"] == 3 * 6 * 4
    assert expected["dw"] == int((x.sum(1) * dz.sum(1)).sum())


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_counts_equal_the_literal_transpose_and_weight_formulas(name):
    """The adjoint-identity evaluation equals Σ I_X ⊙ conv_transpose(I_dZ, I_W) and
    Σ conv2d_weight(I_X, I_dZ) computed literally with torch.nn.grad (symmetric padding only)."""
    geo = GEOMETRIES[name]
    left, right, top, bottom = geo.padding
    if left != right or top != bottom:
        pytest.skip("torch.nn.grad takes symmetric padding only")
    x, dz, wm = masks(geo, seed=3)
    pad = (top, left)
    xf, dzf, wf = x.double(), dz.double(), wm.double()
    args = dict(stride=geo.stride, padding=pad, dilation=geo.dilation, groups=geo.groups)
    dx_both = (xf * torch.nn.grad.conv2d_input(x.shape, wf, dzf, **args)).sum()
    dx_in = torch.nn.grad.conv2d_input(x.shape, wf, dzf, **args).sum()
    dx_out = (xf * torch.nn.grad.conv2d_input(x.shape, wf, torch.ones_like(dzf), **args)).sum()
    dw = torch.nn.grad.conv2d_weight(xf, wm.shape, dzf, **args).sum()
    fwd = F.conv2d(xf, wf, None, geo.stride, pad, geo.dilation, geo.groups).sum()
    got = count_macs(x, dz, geo, w_mask=wm)
    assert (got.dx_both, got.dx_in, got.dx_out, got.dw, got.fwd) == tuple(
        float(v) for v in (dx_both, dx_in, dx_out, dw, fwd))


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_no_zeros_means_dense_and_all_zeros_means_nothing(name):
    geo = GEOMETRIES[name]
    x, dz, wm = masks(geo)
    full = count_macs(torch.ones_like(x), torch.ones_like(dz), geo, w_mask=torch.ones_like(wm))
    assert full.dense > 0
    assert full.fwd == full.dx_out == full.dx_in == full.dx_both == full.dw == full.dense == full.dense_dx
    assert all(v == 1.0 for v in full.speedups().values())
    no_x = count_macs(torch.zeros_like(x), dz, geo)
    assert no_x.fwd == no_x.dx_out == no_x.dx_both == no_x.dw == 0 and no_x.dense == full.dense
    no_dz = count_macs(x, torch.zeros_like(dz), geo)
    assert no_dz.dx_in == no_dz.dx_both == no_dz.dw == 0
    no_w = count_macs(x, dz, geo, w_mask=torch.zeros_like(wm))
    assert no_w.fwd == no_w.dx_in == no_w.dx_both == 0 and no_w.dw > 0  # weight grads are still needed


def test_padding_is_inferred_for_tf_same_convs():
    """timm's Conv2dSame pads inside forward; the counter derives the padding from the shapes."""
    timm_layers = pytest.importorskip("timm.layers")
    layer = timm_layers.Conv2dSame(2, 3, 3, stride=2)
    x = torch.randn(2, 2, 6, 5).clamp(min=0).requires_grad_()
    with ProbeRecorder([layer], []) as rec:
        layer(x).sum().backward()
    call = rec.calls[0]
    # the inferred padding reproduces the layer's own output
    assert torch.allclose(F.conv2d(F.pad(x, call.geo.padding), layer.weight, layer.bias, 2), layer(x))
    expected = brute_force(call.x_mask, call.dz_mask, torch.ones(3, 2, 3, 3, dtype=torch.bool), call.geo)
    assert as_dict(rec.layer_stats()[0].macs) == expected


def _train(method, model_name, steps=3, seed=0):
    data = random_bundle(n_train=16 * steps, n_test=16, batch_size=16, seed=seed)
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, data.num_classes)
    method.setup(model, make_context(data))
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    return method


@pytest.mark.parametrize("model_name", ["cnn", "resnet20-nobn"])
def test_instrumented_training_gives_the_same_weights_as_bp(model_name):
    plain = _train(BP(BPHParams(lr=0.05)), model_name)
    probed = _train(BPSparsity(BPSparsityHParams(lr=0.05, sample_every=1)), model_name)
    assert len(probed._epoch_records) == 3  # every step was instrumented
    for (name, a), b in zip(plain.model.state_dict().items(), probed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_epoch_metrics_and_artifact():
    logged = {}
    data = random_bundle(n_train=48, batch_size=16)
    torch.manual_seed(0)
    model = build_model("resnet20-nobn", data.input_shape, data.num_classes)
    method = BPSparsity(BPSparsityHParams(sample_every=2, log_layers=3))
    ctx = make_context(data)
    ctx.log_artifact = lambda name, text: logged.__setitem__(name, text)
    method.setup(model, ctx)
    for batch in data.train_batches(0, 0):
        method.train_step(batch)
    out = method.diagnostics(0)
    assert out["sp/sampled_steps"] == 2  # steps 0 and 2 of 3
    assert {"sp/0/act_in", "sp/2/dZ", "sp/speedup_bwd", "sp/speedup_train"} <= set(out) and "sp/3/act_in" not in out
    assert out["sp/speedup_bwd"] >= 1 and out["sp/speedup_train"] >= 1
    import json
    table = json.loads(logged["sparsity/epoch-000.json"])
    assert len(table["layers"]) == 2 * len(model.layers())
    first = table["layers"][0]
    assert first["dense_dx"] == 0 and first["act_in"] == 0  # the image: no backward-data, no zeros


def test_bn_makes_dz_dense_and_relu_masks_dz_without_bn():
    """In Conv-BN-ReLU the conv output gradient is dense; without BN it is zero wherever the ReLU was."""
    for model_name, dense in (("resnet20", True), ("resnet20-nobn", False)):
        data = random_bundle(n_train=16, batch_size=16)
        torch.manual_seed(0)
        model = build_model(model_name, data.input_shape, data.num_classes)
        method = BPSparsity(BPSparsityHParams(sample_every=1))
        method.setup(model, make_context(data))
        method.train_step(next(data.train_batches(0, 0)))
        stem = method._epoch_records[0][1][0].fractions()  # stem conv -> (BN) -> ReLU
        assert stem["act_out"] > 0.2
        if dense:
            assert stem["dZ"] == 0
        else:
            assert stem["dZ"] >= stem["act_out"]


def test_timm_model_is_instrumented_on_every_layer():
    pytest.importorskip("timm")
    data = random_bundle(n_train=4, batch_size=4, shape=(3, 32, 32))
    torch.manual_seed(0)
    model = build_model("timm:mobilenetv2_100", data.input_shape, data.num_classes)
    method = BPSparsity(BPSparsityHParams(log_layers=0))
    method.setup(model, make_context(data))
    method.train_step(next(data.train_batches(0, 0)))
    stats = method._epoch_records[0][1]
    assert len(stats) == len(model.layers()) > 50
    assert all(s.macs.dense > 0 for s in stats)
    out = method.diagnostics(0)
    assert out["sp/act_out"] > 0.2  # ReLU6 outputs
    assert math.isfinite(out["sp/speedup_bwd"]) and out["sp/speedup_bwd"] > 1


def test_update_false_measures_every_step_at_the_initial_weights():
    probed = _train(BPSparsity(BPSparsityHParams(lr=0.05, sample_every=1, update=False)), "cnn")
    torch.manual_seed(0)
    data = random_bundle(n_train=48, batch_size=16)
    initial = build_model("cnn", data.input_shape, data.num_classes).state_dict()
    for name, value in initial.items():
        if "running" not in name and "num_batches" not in name:  # BN statistics still follow the batches
            assert torch.equal(value, probed.model.state_dict()[name]), name
    assert len(probed._epoch_records) == 3
    # the backward still ran: every parameter has its gradient
    assert all(p.grad is not None for p in probed.model.parameters())


def test_timm_build_options_are_parsed_checked_and_passed():
    pytest.importorskip("timm")
    from suite.errors import UsageError
    from suite.models import check_model_name

    def last_bn_weights(name):
        torch.manual_seed(0)
        model = build_model(name, (3, 32, 32), 10)
        return [float(block.inner.bn2.weight.detach().abs().sum()) for block in model.blocks]

    assert all(w == 0 for w in last_bn_weights("timm:resnet18"))  # timm's default: zero-init last BN
    assert all(w > 0 for w in last_bn_weights("timm:resnet18:zero_init_last=false"))
    with pytest.raises(UsageError, match="zero_init_last"):
        check_model_name("timm:resnet18:zero_init=false")
    with pytest.raises(UsageError, match="true, false"):
        check_model_name("timm:resnet18:zero_init_last=no")


def test_bound_test_against_hand_ranked_ratios():
    from suite.experiments.gradient_sparsity import bound_test
    exact = {n: (r, r) for n, r in {"a": 5.5, "b": 2.0, "c": 1.8, "d": 1.75, "e": 1.7, "f": 1.3}.items()}
    ok = bound_test(exact, (1.69, 5.43))
    assert ok["outcome"] == "consistent" and ok["largest"] == (5.5, 5.5) and ok["nth_largest"] == (1.7, 1.7)
    assert ok["near_max"] == ["a"] and ok["near_min"] == ["c", "d", "e"]
    low = bound_test(exact, (1.71, 5.43))  # five networks of at least 1.71x: only four candidates have it
    assert (low["outcome"], low["max"], low["min"]) == ("inconsistent", "holds", "fails")
    high = bound_test(exact, (1.2, 5.6))
    assert (high["outcome"], high["max"], high["min"]) == ("inconsistent", "fails", "holds")
    # seeds that straddle the published top end decide nothing
    spread = exact | {"a": (5.2, 5.49)}
    assert bound_test(spread, (1.69, 5.43))["outcome"] == "within the seeds' spread"
    assert bound_test(spread, (1.69, 5.5))["outcome"] == "inconsistent"
    assert bound_test(spread, (1.69, 5.2))["outcome"] == "consistent"
    with pytest.raises(ValueError, match="at least 5"):
        bound_test({"a": (9.0, 9.0), "b": (9.0, 9.0)}, (1.0, 2.0))


def test_a_network_whose_runs_did_not_finish_is_a_row():
    import pandas as pd

    from suite.experiments import gradient_sparsity as gs

    runs = pd.DataFrame({"run_id": ["r1"], "model": ["timm:vgg16"], "dataset": [gs.RANDOM], "status": ["diverged"],
                         "status_reason": ["non-finite loss at step 1"], "seed": [0]})

    class Ctx:
        def history(self, keys):
            return pd.DataFrame(columns=["run_id", "key", "step", "value"])

    ctx = Ctx()
    ctx.runs = runs
    table = gs.network_table(ctx)
    assert table[["network", "runs", "not_finished", "why"]].to_dict("records") == [
        {"network": "vgg16", "runs": 0, "not_finished": 1, "why": "non-finite loss at step 1"}]
