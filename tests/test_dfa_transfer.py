"""dfa-transfer: the pretrained conv stack (deterministic, committed, frozen under every method),
the few-shot view of MNIST digits 5-9, the grid's tuning budget and the verdict rule."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from suite.config import Cell, TrainConfig, resolve
from suite.data import DATASETS, build_data
from suite.data.sources import load_split
from suite.errors import UsageError
from suite.experiments import EXPERIMENTS, dfa_transfer
from suite.methods import METHODS
from suite.models import build_model
from suite.models.init import initialise
from suite.models.transfer import RECIPE, FrozenConvStack, PretrainRecipe, load_artefact, pretrain
from tests.conftest import make_context, random_bundle

SMALL = PretrainRecipe(images=256, epochs=1, batch_size=64)  # a few steps: the determinism check


# ---- pretraining --------------------------------------------------------------------------------

def test_pretraining_is_deterministic_and_seeded(mnist_root):
    before = torch.get_num_threads(), torch.random.get_rng_state()
    a, b = pretrain(SMALL, mnist_root), pretrain(SMALL, mnist_root)
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert a["test_acc"] == b["test_acc"]
    other = pretrain(dataclasses.replace(SMALL, seed=1), mnist_root)
    assert not torch.equal(a["state"]["w1"], other["state"]["w1"])
    # the caller's thread count and global RNG are left as they were
    assert torch.get_num_threads() == before[0] and torch.equal(torch.random.get_rng_state(), before[1])


def test_the_committed_artefact_is_the_current_recipe_and_a_good_stack(mnist_root):
    payload = load_artefact()
    assert payload["recipe_hash"] == RECIPE.digest() and payload["recipe"] == dataclasses.asdict(RECIPE)
    assert payload["test_acc"] > 0.98  # digits 0-4, the pretraining task
    # its weights give that accuracy again (stack + the pretraining head on the 0-4 test split)
    spec = DATASETS["mnist-0to4"]
    images, labels = load_split(spec, mnist_root, False)
    stack = FrozenConvStack(payload["state"])
    head = torch.nn.Linear(512, 5)
    head.load_state_dict(payload["head"])
    with torch.no_grad():
        x = (images.float() / 255 - spec.mean[0]) / spec.std[0]
        acc = float((head(stack(x)).argmax(1) == labels).float().mean())
    assert acc == pytest.approx(payload["test_acc"], abs=2e-3)


def test_weights_of_another_recipe_are_refused():
    with pytest.raises(UsageError, match="recipe"):
        load_artefact(recipe=dataclasses.replace(RECIPE, epochs=RECIPE.epochs + 1))


def test_model_spec_and_input_checks():
    model = build_model("transfer", (1, 28, 28), 5)
    assert [type(m).__name__ for m in model.layers()] == ["Linear"] * 3  # 2 hidden FC + head; no conv layer
    assert not list(model.stem.parameters()) and len(list(model.stem.buffers())) == 4
    assert len(build_model("transfer:64-32-16", (1, 28, 28), 5).blocks) == 3
    for bad in ("transfer:64", "transfer:a-b"):
        with pytest.raises(UsageError):
            build_model(bad, (1, 28, 28), 5)
    with pytest.raises(UsageError, match="28"):
        build_model("transfer", (3, 32, 32), 10)


# ---- frozen under every method -------------------------------------------------------------------

def _stem_state(model):
    return {k: v.clone() for k, v in model.stem.state_dict().items()}


@pytest.mark.parametrize("method_name,hp", [(name, {}) for name in sorted(METHODS)]
                         + [("hybrid-dfa", {"preset": "modulewise", "modules": 2})])
def test_the_conv_stack_stays_frozen_under_every_method(method_name, hp):
    data = random_bundle(n_train=40, n_test=16, batch_size=10, num_classes=5, dataset="mnist-5to9")
    torch.manual_seed(0)
    model = initialise(build_model("transfer", data.input_shape, 5), "xavier")  # init leaves it alone too
    reference = load_artefact()["state"]
    assert all(torch.equal(model.stem.state_dict()[k], reference[k]) for k in reference)
    method = METHODS[method_name](METHODS[method_name].HParams(**hp))
    if method.skip_reason(model, data) is not None:
        return
    try:
        method.reject_settings(model, TrainConfig(), torch.device("cpu"))
    except UsageError:
        return
    fc_before = [p.detach().clone() for p in model.parameters()]
    method.setup(model, make_context(data, epochs=2))
    try:
        for epoch in range(2):
            for batch in data.train_batches(0, epoch):
                method.train_step(batch)
            method.end_epoch(epoch)
            method.diagnostics(epoch)
    finally:
        method.close()
    after = model.stem.state_dict()
    assert all(torch.equal(after[k], reference[k]) for k in reference), f"{method_name} changed the conv stack"
    assert any(not torch.equal(a, p) for a, p in zip(fc_before, model.parameters())), \
        f"{method_name} trained none of the FC layers"


# ---- the few-shot data view ----------------------------------------------------------------------

def _view(seed: int, k: int = 10, **kw):
    cfg = TrainConfig(per_class=k, train_subset=2000, val_fraction=0.1, batch_size=5, **kw)
    return build_data("mnist-5to9", cfg, torch.device("cpu"), seed=seed)


def test_the_class_views_hold_only_their_digits(mnist_root):
    raw_images, raw_labels = load_split(DATASETS["mnist"], mnist_root, False)
    for name, digits in (("mnist-0to4", range(5)), ("mnist-5to9", range(5, 10))):
        images, labels = load_split(DATASETS[name], mnist_root, False)
        keep = torch.isin(raw_labels, torch.tensor(list(digits)))
        assert torch.equal(images, raw_images[keep]) and torch.equal(labels, raw_labels[keep] - digits[0])
        assert DATASETS[name].num_classes == 5


def test_k_per_class_drawn_per_seed_and_disjoint_from_validation_and_test(mnist_root):
    data = _view(seed=0)
    assert torch.bincount(data.train.labels, minlength=5).tolist() == [10] * 5
    assert len(data.val) == 200 and len(data.test) == 4861  # every test image of digits 5-9
    train = {bytes(x.numpy()) for x in data.train.images}
    assert not train & {bytes(x.numpy()) for x in data.val.images}
    assert not train & {bytes(x.numpy()) for x in data.probe.images}
    assert not train & {bytes(x.numpy()) for x in data.test.images}
    same, other = _view(seed=0), _view(seed=1)
    assert torch.equal(same.train.images, data.train.images)
    assert not torch.equal(other.train.images, data.train.images)
    assert torch.equal(other.val.images, data.val.images)  # the validation split does not move with the seed
    assert torch.bincount(_view(seed=2, k=30).train.labels).tolist() == [30] * 5


def test_per_class_asks_only_for_what_the_data_holds(mnist_root):
    with pytest.raises(UsageError, match="per_class"):
        _view(seed=0, k=1000)  # 5000 images asked of the ~1750 the splits leave
    with pytest.raises(UsageError, match="train_fraction"):
        _view(seed=0, train_fraction=0.5)
    with pytest.raises(UsageError, match="class"):
        _view(seed=0, k=340)  # fewer than 340 of some digit among the ~1750 left


# ---- the grid and the verdict --------------------------------------------------------------------

def test_verify_grid_gives_every_method_the_same_lr_grid_at_five_seeds():
    cells = EXPERIMENTS["dfa-transfer"].cells("verify", 1)
    frame = pd.DataFrame([{"method": c.method, **dict(c.overrides), "seed": c.seed} for c in cells])
    frame["variant"] = frame.method + frame.get("preset", pd.Series("", index=frame.index)).fillna("")
    assert set(frame.per_class.astype(int)) == {10, 30, 100} and frame.seed.nunique() >= 5
    grids = frame.groupby(["variant", "per_class"]).lr.apply(lambda s: tuple(sorted(set(s))))
    assert grids.nunique() == 1 and len(grids.iloc[0]) >= 5
    assert (frame.groupby(["variant", "per_class", "lr"]).seed.nunique() >= 5).all()
    assert set(frame.method) == {"bp", "dfa", "bdfa", "hybrid-dfa"}
    for cell in cells[:3]:
        resolve(cell)
    assert len(EXPERIMENTS["dfa-transfer"].cells("smoke", 1)) <= 16


def _chosen(d_small: list[float], d_large: list[float], bp: float = 80.0) -> pd.DataFrame:
    rows = []
    for k, diffs, base in ((10, d_small, bp), (100, d_large, bp + 10)):
        for seed, d in enumerate(diffs):
            noise = (seed % 3) - 1.0  # the seed's own luck, shared by its methods
            rows += [{"variant": "bp", "k": k, "seed": seed, "test": base + noise},
                     {"variant": "dfa", "k": k, "seed": seed, "test": base + noise + d - 3},  # a weaker rival
                     {"variant": "bdfa", "k": k, "seed": seed, "test": base + noise + d}]
    return pd.DataFrame(rows)


def test_verdict_rule_on_synthetic_tables():
    v = dfa_transfer.transfer_verdict
    reproduced = v(_chosen([3.0, 3.2, 2.8, 3.1, 2.9], [0.1, -0.1, 0.0, 0.2, -0.2]))
    assert reproduced["verdict"] == "reproduced" and reproduced["best"] == "bdfa"
    # BP is better at the smallest k
    assert v(_chosen([-2.0, -2.5, -1.5, -2.2, -1.8], [0.0] * 5))["verdict"] == "not reproduced"
    # better than BP at small k, but more so at large k: not "especially when small"
    late = v(_chosen([2.0, 2.1, 1.9, 2.0, 2.0], [5.0, 5.2, 4.8, 5.1, 4.9]))
    assert late["verdict"] == "not reproduced" and "smaller" in late["why"]
    # too noisy to decide
    assert v(_chosen([4.0, -3.0, 5.0, -2.0, 1.0], [0.0] * 5))["verdict"] == "undecided"
    # one seed: no interval
    assert v(_chosen([3.0], [0.0]))["verdict"] == "undecided"


def test_lr_choice_scores_unfinished_runs_zero_and_breaks_ties_low():
    table = pd.DataFrame([
        {"variant": "bp", "k": 10, "lr": 1e-3, "seed": 0, "best_val": 80.0},
        {"variant": "bp", "k": 10, "lr": 1e-3, "seed": 1, "best_val": 82.0},
        {"variant": "bp", "k": 10, "lr": 1e-2, "seed": 0, "best_val": 95.0},
        {"variant": "bp", "k": 10, "lr": 1e-2, "seed": 1, "best_val": 0.0},  # diverged
        {"variant": "dfa", "k": 10, "lr": 1e-3, "seed": 0, "best_val": 70.0},
        {"variant": "dfa", "k": 10, "lr": 1e-2, "seed": 0, "best_val": 70.0},
    ])
    scores = dfa_transfer.choose_lr(table)
    chosen = scores[scores.chosen].set_index("variant").lr
    assert chosen["bp"] == 1e-3 and chosen["dfa"] == 1e-3


def test_best_validation_epoch_is_read_per_run():
    runs = pd.DataFrame([{"method": "bp", "o.per_class": "10", "o.lr": "0.001", "seed": 0, "status": "finished",
                          "run_id": "a"},
                         {"method": "dfa", "o.per_class": "10", "o.lr": "0.001", "seed": 0, "status": "diverged",
                          "run_id": "b"}])
    hist = pd.DataFrame([{"run_id": "a", "key": key, "step": step, "value": value}
                         for step, (val, test) in enumerate([(0.5, 0.4), (0.9, 0.7), (0.9, 0.8), (0.6, 0.9)])
                         for key, value in (("val_acc", val), ("test_acc", test))])
    table = dfa_transfer.per_run(runs, hist).set_index("run_id")
    assert table.at["a", "best_epoch"] == 2 and table.at["a", "test"] == pytest.approx(70.0)
    assert table.at["a", "final_test"] == pytest.approx(90.0)
    assert table.at["b", "best_val"] == 0.0 and pd.isna(table.at["b", "test"])


def test_cells_name_the_model_and_the_view():
    cell = dfa_transfer.grid("quick", 1)[0]
    assert isinstance(cell, Cell) and cell.model == "transfer" and cell.dataset == "mnist-5to9"
