"""Generic conformance tests, parametrized over every registered method × a few models: each
method either declares the cell incompatible (a reason) or trains a few finite steps and honours
the contract. New methods get these for free."""

from __future__ import annotations

import pytest
import torch

from suite.config import TrainConfig
from suite.harness import check_declared
from suite.methods import METHODS
from suite.models import MODELS as MODEL_REGISTRY
from suite.models import build_model
from suite.params import keys_of
from tests.conftest import make_context, random_bundle

MODELS = ["mlp", "cnn", "resnet20", "lenet"]  # every method runs on these; every model family: below


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_method_contract(method_name, model_name):
    data = random_bundle(n_train=48, n_test=16, batch_size=16)
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes)
    method = METHODS[method_name]()
    assert method.name == method_name and method.summary, "every method names and describes itself"
    reason = method.skip_reason(model, data)
    if reason is not None:
        assert isinstance(reason, str) and reason.strip()
        return
    method.setup(model, make_context(data, epochs=2))
    try:
        for epoch in range(2):
            for batch in data.train_batches(0, epoch):
                out = method.train_step(batch)
                # every key the harness would log from it is declared (loss, correct: the harness's own)
                check_declared(method, {k: 0.0 for k in out if k not in ("loss", "correct")})
                assert "loss" in out and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
                if "correct" in out:
                    assert 0 <= int(out["correct"]) <= len(batch)
                assert all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in out.values())
            assert method.phase(epoch) is None or isinstance(method.phase(epoch), str)
            extra = method.end_epoch(epoch) | method.diagnostics(epoch)
            assert all(isinstance(float(v), float) for v in extra.values())
            assert all(isinstance(k, str) for k in extra)
            check_declared(method, extra)  # an undeclared metric key fails here, not in a user's run
        model.eval()
        with torch.no_grad():
            logits = method.predict(next(data.eval_batches("test")).x)
        assert logits.shape == (16, data.num_classes) and torch.isfinite(logits).all()
    finally:
        method.close()


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_hparams_are_frozen_documented_and_valid_by_default(method_name):
    import dataclasses

    from suite.params import validate
    hp = METHODS[method_name].HParams()
    assert dataclasses.is_dataclass(hp) and type(hp).__dataclass_params__.frozen
    undocumented = [f.name for f in dataclasses.fields(hp) if not f.metadata.get("doc")]
    assert not undocumented, f"hparams without a doc string: {undocumented}"
    validate(hp, method_name)  # the defaults pass their own range checks


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_no_hyper_parameter_is_named_like_a_run_setting(method_name):
    """`--set epochs=5` goes to the run settings: a method field of that name could never be set."""
    shadowed = set(keys_of(METHODS[method_name].HParams)) & set(keys_of(TrainConfig))
    assert not shadowed, f"{method_name}'s hyper-parameters {sorted(shadowed)} are shadowed by run settings"


def test_an_undeclared_metric_key_fails_the_contract():
    method = METHODS["bp"]()
    with pytest.raises(ValueError, match="undeclared metric"):
        check_declared(method, {"made_up_metric": 1.0})


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_close_works_before_setup(method_name):
    """The harness closes a method even when the cell was skipped before setup ran."""
    METHODS[method_name]().close()


# Model families whose bare name is not a model: the example the test builds instead
MODEL_EXAMPLES = {"bottleneck": "bottleneck:28"}


@pytest.mark.parametrize("family", sorted(MODEL_REGISTRY))
def test_every_registered_model_trains_a_bp_step(family):
    """Every model family in the registry (a new one included, with no line here unless its bare
    name needs a spec) builds, and one BP step reaches every parameter with a finite loss."""
    name = MODEL_EXAMPLES.get(family, family)
    data = random_bundle(n_train=4, n_test=4, batch_size=4)
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.num_classes)
    assert model.layers(), f"{name}: no conv/linear layers for the methods to see"
    method = METHODS["bp"]()
    method.setup(model, make_context(data))
    out = method.train_step(next(data.train_batches(0, 0)))
    assert torch.isfinite(out["loss"])
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:5]}"
