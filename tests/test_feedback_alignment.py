"""Feedback-alignment family (fa, dfa in both styles, bdfa, hybrid-dfa) against independent
computations: a hand-computed DFA update, BioTorch's formulation of its DFA signal, exact
equivalence to BP in the limits where it must hold, the storage and reproducibility of the
feedback, the absence of backward-data convolutions, and probes that never read the test split."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from suite.config import TrainConfig
from suite.data import DataBundle, Split
from suite.errors import UsageError
from suite.methods import METHODS
from suite.methods.feedback import BDFA, DFA, FA, HybridDFA
from suite.methods.feedback.engine import feedback_forward
from suite.methods.feedback.matrices import draw, xavier_bound
from suite.models import build_model
from tests.conftest import make_context, random_bundle

PLAIN_SGD = dict(momentum=0.0, weight_decay=0.0, schedule="constant")


def probe_bundle(n_train=32, n_probe=8, batch_size=16, test_labels=None) -> DataBundle:
    """Random images with a probe split (what alignment probes read) and a test split whose labels
    can be poisoned, to show that no probe reads it."""
    gen = torch.Generator().manual_seed(0)

    def split(n, labels=None):
        return Split(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8),
                     labels if labels is not None else torch.randint(0, 10, (n,), generator=gen))
    base = random_bundle()
    probe = split(n_probe) if n_probe else None
    return DataBundle(base.spec, split(n_train), split(8, test_labels), None, probe, batch_size=batch_size,
                      eval_batch_size=64, augment="none", device=torch.device("cpu"), channels_last=False)


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
    data = probe_bundle(n_train=16, batch_size=8)
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
    assert hybrid.end_epoch(0) == {}  # training work only: the probe is a diagnostic, off the clock
    metrics = hybrid.diagnostics(0)
    means = [v for k, v in metrics.items() if k.startswith("align/") and k.endswith("_mean")]
    assert means and all(abs(m - 1.0) < 1e-6 for m in means)


def test_modulewise_splits_into_modules_and_validates_count():
    data = random_bundle(n_train=16, n_test=8, batch_size=8)
    torch.manual_seed(0)
    model = build_model("resnet20", data.input_shape, 10)
    plan = HybridDFA(HybridDFA.HParams(preset="modulewise", modules=3)).plan(model)
    assert plan.boundary == ("bp",) * 3 + ("dfa",) + ("bp",) * 2 + ("dfa",) + ("bp",) * 3  # stages of resnet20
    with pytest.raises(UsageError):
        HybridDFA(HybridDFA.HParams(preset="modulewise", modules=11)).reject_settings(model, TrainConfig(), torch.device("cpu"))


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
@pytest.mark.parametrize("name,hp", [("dfa", {"granularity": "block"}), ("dfa", {"style": "biotorch"}),
                                     ("hybrid-dfa", {"preset": "modulewise"}),
                                     ("hybrid-dfa", {"preset": "conv-dfa+fc-bp", "feedback": "sparse"}),
                                     ("dfa", {"feedback": "uniform"})])
def test_variants_train_a_few_finite_steps(model_name, name, hp):
    data = probe_bundle()
    cls = METHODS[name]
    method = cls(cls.HParams(**hp, align_samples=8))
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    if method.skip_reason(model, data):
        return
    method.setup(model, make_context(data))
    for batch in data.train_batches(0, 0):
        assert torch.isfinite(method.train_step(batch)["loss"])
    metrics = method.diagnostics(0)
    assert "align/mean" in metrics and all(abs(v) <= 1.0 + 1e-9 for k, v in metrics.items() if k.endswith("_mean"))


def test_probes_read_the_probe_split_never_the_test_split():
    """Poisoned test labels change nothing: the probe batch comes from the probe split."""
    metrics = []
    for labels in (torch.zeros(8, dtype=torch.long), torch.full((8,), 9)):
        data = probe_bundle(test_labels=labels)
        method = FA(FA.HParams(align_samples=8))
        _setup(method, "cnn", data)
        metrics.append(method.diagnostics(0))
    assert "align/mean" in metrics[0] and metrics[0] == metrics[1]
    no_probe = probe_bundle(n_probe=0)  # no probe and no validation split: no probe at all
    method = FA(FA.HParams(align_samples=8))
    _setup(method, "cnn", no_probe)
    assert "align/mean" not in method.diagnostics(0)


def test_fa_xavier_feedback_has_biotorch_bounds():
    data = random_bundle(n_train=16, n_test=8)
    method = FA(FA.HParams(feedback="xavier", align_samples=0))
    model = _setup(method, "lenet", data)
    for layer, b in zip(model.layers(), method.feedback):
        bound = xavier_bound(tuple(layer.weight.shape))
        assert b.shape == layer.weight.shape and float(b.abs().max()) <= bound
        assert float(b.abs().max()) > 0.9 * bound  # uniform on the whole interval
        assert abs(float(b.std()) - bound / 3 ** 0.5) < 0.15 * bound  # std of U(-b, b)


# --- BioTorch-style DFA (style=biotorch) ---------------------------------------------------------

def _biotorch_signal(layer, kernel, error, input_shape):
    """BioTorch's formulation (biotorch/layers/dfa/conv.py, independent of the suite's dense matrix):
    the error broadcast over the layer's output positions, then conv_transpose through B."""
    if isinstance(layer, torch.nn.Linear):
        return error @ kernel
    x = torch.zeros(1, *input_shape)
    out_hw = F.conv2d(x, layer.weight.detach(), None, layer.stride, layer.padding, layer.dilation).shape[2:]
    broadcast = error[:, :, None, None].expand(*error.shape, *out_hw).contiguous()
    return torch.nn.grad.conv2d_input((len(error), *input_shape), kernel, broadcast, stride=layer.stride,
                                      padding=layer.padding, dilation=layer.dilation)


@pytest.mark.parametrize("model_name", ["lenet", "cnn"])
def test_biotorch_dfa_replaces_each_layer_input_gradient(model_name):
    """In a plain chain every conv/linear layer's input receives exactly BioTorch's signal
    (conv_transpose of the broadcast error through the kernel-shaped B), and the head's weight
    gradient is BP's (e ⊗ its input)."""
    data = random_bundle(n_train=8, n_test=8, batch_size=8)
    method = DFA(DFA.HParams(style="biotorch", align_samples=0))
    model = _setup(method, model_name, data)
    batch = next(data.train_batches(0, 0))
    layers = model.layers()
    inputs = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, k=i: inputs.__setitem__(k, a[0]))
             for i, layer in enumerate(layers)]
    logits = method.forward(batch.x)
    for h in hooks:
        h.remove()
    captured = {}
    handles = [t.register_hook(lambda g, k=i: captured.__setitem__(k, g)) for i, t in inputs.items() if t.requires_grad]
    loss = F.cross_entropy(logits, batch.y)
    error = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    model.zero_grad(set_to_none=True)
    loss.backward()
    for h in handles:
        h.remove()
    assert len(captured) == len(layers) - 1  # every layer but the first (its input is the image)
    for i, grad in captured.items():
        expected = _biotorch_signal(layers[i], method.direct.kernels[i], error, tuple(inputs[i].shape[1:]))
        torch.testing.assert_close(grad, expected.view_as(grad), atol=1e-6, rtol=1e-5, msg=f"layer {i}")
    torch.testing.assert_close(layers[-1].weight.grad, error.t() @ inputs[len(layers) - 1], atol=1e-6, rtol=1e-5)


def test_biotorch_dfa_dense_matrix_equals_broadcast_conv_transpose():
    """The suite's one-GEMM projection e·M equals BioTorch's conv_transpose of the broadcast error,
    for every layer input of LeNet and ResNet-20 (strided and padded convs included)."""
    for model_name in ("lenet", "resnet20"):
        data = random_bundle(n_train=8, n_test=8, batch_size=8)
        method = DFA(DFA.HParams(style="biotorch", align_samples=0))
        model = _setup(method, model_name, data)
        error = torch.randn(5, 10, generator=torch.Generator().manual_seed(1))
        projected = method.bank.project(error)
        used = [i for i, info in enumerate(method.direct.inputs) if info.needs_grad]
        for slot, i in enumerate(used):
            layer, info = model.layers()[i], method.direct.inputs[i]
            expected = _biotorch_signal(layer, method.direct.kernels[i], error, info.shape)
            torch.testing.assert_close(projected[slot].reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)


def test_biotorch_dfa_feedback_is_kernel_shaped_xavier_and_runs_no_backward_data_conv():
    data = random_bundle(n_train=8, n_test=8, batch_size=8)
    method = DFA(DFA.HParams(style="biotorch", align_samples=0))
    model = _setup(method, "resnet20", data)
    for layer, kernel in zip(model.layers(), method.direct.kernels):
        expect = (10, layer.in_channels, *layer.kernel_size) if isinstance(layer, torch.nn.Conv2d) else (10, layer.in_features)
        assert tuple(kernel.shape) == expect and float(kernel.abs().max()) <= xavier_bound(expect)
    batch = next(data.train_batches(0, 0))
    with ConvBackwardLog() as log:
        method.train_step(batch)
    assert len(log.masks) == len(model.layers()) - 1 and not any(m[0] for m in log.masks)


def test_biotorch_dfa_keeps_shortcut_gradients_nokland_cuts_them():
    """With every feedback matrix zero but the one feeding the head's input, the last-but-one
    ResNet block's conv2 still learns in the biotorch style (the gradient reaches it through the
    last block's identity shortcut) and not at all in Nøkland's (every point is detached)."""
    data = random_bundle(n_train=8, n_test=8, batch_size=8)
    batch = next(data.train_batches(0, 0))
    grads = {}
    for style in ("biotorch", "nokland"):
        method = DFA(DFA.HParams(style=style, align_samples=0))
        model = _setup(method, "resnet20", data)
        method.bank.matrix[:, :-method.bank.sizes[-1]] = 0
        model.zero_grad(set_to_none=True)
        F.cross_entropy(method.forward(batch.x), batch.y).backward()
        last_but_one_conv2 = model.blocks[-2].layers()[-1]
        assert last_but_one_conv2 is model.layers()[-4]
        grads[style] = last_but_one_conv2.weight.grad
    assert float(grads["biotorch"].abs().sum()) > 0
    assert grads["nokland"] is None or float(grads["nokland"].abs().sum()) == 0


def test_biotorch_style_rejects_nokland_only_settings():
    model = build_model("lenet", (1, 28, 28), 10)
    with pytest.raises(UsageError, match="style=nokland only"):
        DFA(DFA.HParams(style="biotorch", granularity="block")).reject_settings(model, TrainConfig(), torch.device("cpu"))
    DFA(DFA.HParams(style="biotorch")).reject_settings(model, TrainConfig(), torch.device("cpu"))


def test_biotorch_mnist_report_selects_epochs_by_both_protocols_and_names_diverged_runs():
    import pandas as pd

    from suite.experiments.biotorch_mnist import _selected_errors, reproduced, summary_table
    hist = pd.DataFrame([  # one run: test acc peaks at epoch 2, validation acc at epoch 1
        ("r1", "test_acc", 0, 0.90), ("r1", "test_acc", 1, 0.95), ("r1", "test_acc", 2, 0.99),
        ("r1", "val_acc", 0, 0.90), ("r1", "val_acc", 1, 0.97), ("r1", "val_acc", 2, 0.96)],
        columns=["run_id", "key", "step", "value"])
    sel = _selected_errors(hist)
    assert sel.err_biotorch.iloc[0] == pytest.approx(1.0) and sel.epoch_biotorch.iloc[0] == 2
    assert sel.err_clean.iloc[0] == pytest.approx(5.0) and sel.epoch_clean.iloc[0] == 1
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "dataset": "mnist", "method": ["bp", "dfa"],
                         "status": ["finished", "diverged"], "m.diverged_step": [float("nan"), 1234.0],
                         "p.train.epochs": "3", "m.train_time": [3.0, float("nan")]})
    table = summary_table(runs, sel, "paper").set_index("method")
    assert table.loc["dfa", "err % BioTorch protocol (best test epoch)"] == "diverged (step 1234)"
    assert table.loc["bp", "published err %"] == pytest.approx(0.91)
    assert table.loc["bp", "verdict (BioTorch protocol)"] == "undecided"  # one seed: no CI to decide with
    assert summary_table(runs, sel, "quick").loc[0, "verdict (clean)"].startswith("–")  # no target off-paper
    assert reproduced(0.91, 1.0, 0.2, 0.25) == "reproduced"  # gap 0.09, CI ±0.2 narrower than 0.25
    assert reproduced(0.91, 1.5, 0.1, 0.25) == "not reproduced"  # gap 0.59 with a narrow CI
    # a CI wider than the tolerance decides nothing, even with the published value inside it
    assert reproduced(0.91, 1.5, 0.7, 0.25) == "undecided"
    assert reproduced(0.97, 30.2, 126.0, 0.25) == "undecided"  # one collapsed seed of three
    assert reproduced(0.91, 5.0, 0.5, 0.25) == "not reproduced"  # the CI's near end is 3.59 pts away


def test_biotorch_mnist_report_names_a_collapsed_seed_and_reads_the_peer_diagnosis(tmp_path):
    """A seed that finished at the uniform guess is named in the error cell (it is averaged in: the
    experiment stops only on a non-finite loss), and the committed first-epoch side-by-side output
    decides whose the collapse is: the setting's when BioTorch's own package collapses too."""
    import pandas as pd

    from suite.experiments.biotorch_mnist import FIRST_EPOCH_FILE, first_epoch_check, summary_table
    runs = pd.DataFrame({"run_id": ["a", "b"], "dataset": "mnist", "method": "frsf", "seed": [0, 1],
                         "status": "finished", "m.train_loss": [0.03, 2.30], "m.test_acc": [0.99, 0.11]})
    sel = pd.DataFrame({"run_id": ["a", "b"], "err_biotorch": [1.0, 88.0], "epoch_biotorch": [9, 0],
                        "err_clean": [1.1, 88.6], "epoch_clean": [9, 0]})
    row = summary_table(runs, sel, "paper").iloc[0]
    assert row["err % clean protocol (best val epoch)"].endswith("(1/2 at chance: seed 1)")
    assert row["clean err % per seed"] == "1.10, 88.60"
    (tmp_path / FIRST_EPOCH_FILE).write_text(
        "  frsf: blow-ups in the first epoch, suite 2/6, BioTorch 3/6\n"
        "  usf: blow-ups in the first epoch, suite 0/6, BioTorch 0/6\n"
        "  brsf: blow-ups in the first epoch, suite 1/6, BioTorch 0/6\n")
    checks = first_epoch_check(tmp_path)
    assert "belongs to the setting" in checks["frsf"] and "neither" in checks["usf"]
    assert "a defect to find" in checks["brsf"]  # only the suite collapsing would be the suite's fault
    assert first_epoch_check(tmp_path / "absent") == {}
