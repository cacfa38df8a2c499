"""The tuning protocol (`bpsuite tune`) on the smoke profile: studies as nested MLflow runs, the
settings file, repeatability, resumption, the untouched test split, and bad input."""

from __future__ import annotations

import json
import math
import re

import pytest

from suite.cli import main
from suite.config import Cell
from suite.params import Categorical, LogUniform, Uniform

BP_MLP = Cell("bp", "mlp", "mnist", 0, "smoke")


def _spec(cell=BP_MLP, trials=3, seed=0, sampler="tpe"):
    from suite.tuning.study import StudySpec
    return StudySpec("summary", cell, {"lr": LogUniform(1e-4, 1.0)}, trials, seed, sampler)


def _tuning_runs(uri: str) -> list:
    from suite.tracking import Tracker
    from suite.tuning.study import MLFLOW_EXPERIMENT
    tracker = Tracker(uri, experiment=MLFLOW_EXPERIMENT)
    return tracker.client.search_runs([tracker.experiment_id], max_results=1000)


def _study(tmp_path, spec, name="store"):
    """Run `spec` in its own stores under tmp_path/name; the result and the MLflow URI."""
    from suite.tracking import Tracker
    from suite.tuning.study import MLFLOW_EXPERIMENT, run_study
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    result = run_study(spec, Tracker(uri, experiment=MLFLOW_EXPERIMENT), f"sqlite:///{folder / 'tuning.db'}",
                       say=lambda *_: None)
    return result, uri


def test_a_study_runs_its_trials_as_child_runs_and_writes_the_settings_file(tmp_path, monkeypatch, mnist_root):
    monkeypatch.chdir(tmp_path)
    settings_file = tmp_path / "tuned.json"
    argv = ["tune", "summary", "--profile", "smoke", "--trials", "3", "--methods", "bp", "--models", "mlp",
            "--settings-file", str(settings_file), "--results-dir", "r", "--figures-dir", "f"]
    assert main(argv) == 0

    runs = _tuning_runs(f"sqlite:///{tmp_path / 'mlruns.db'}")
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "study"]
    children = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.data.tags["status"] == "finished" and c.data.params["train.val_fraction"] == "0.1"
               for c in children)

    # the chosen lr is the child run with the best final validation accuracy (earliest on ties),
    # read back from MLflow, independently of the study's own bookkeeping
    children.sort(key=lambda r: r.info.start_time)
    best = max(children, key=lambda r: (r.data.metrics["val_acc"], -children.index(r)))
    entry, = json.loads(settings_file.read_text())["entries"]
    assert float(entry["settings"]["lr"]) == float(best.data.params["hp.lr"])
    assert parent.data.tags["chosen.lr"] == entry["settings"]["lr"]
    assert entry["best_val_acc"] == best.data.metrics["val_acc"]
    assert (entry["trials"], entry["sampler_seed"], entry["val_fraction"]) == (3, 0, 0.1)
    assert entry["objective"] == "final-epoch validation accuracy" and entry["commit"] and entry["date"]
    assert (tmp_path / "r" / "tuning-summary.md").exists()
    assert (tmp_path / "f" / "tuning-summary-sensitivity.png").stat().st_size > 1000


def test_two_studies_with_the_same_seed_choose_the_same_settings(tmp_path, mnist_root):
    first, _ = _study(tmp_path, _spec(seed=3), "a")
    again, _ = _study(tmp_path, _spec(seed=3), "b")  # a fresh store: every trial really runs again
    other, _ = _study(tmp_path, _spec(seed=4), "c")
    assert [t.settings for t in first.trials] == [t.settings for t in again.trials]
    assert [t.value for t in first.trials] == [t.value for t in again.trials]
    assert first.best.settings == again.best.settings
    assert [t.settings for t in first.trials] != [t.settings for t in other.trials]
    # every method with the same space starts from the same seeded random settings
    dfa, _ = _study(tmp_path, _spec(cell=Cell("dfa", "mlp", "mnist", 0, "smoke"), seed=3), "d")
    assert dfa.trials[0].settings == first.trials[0].settings


def test_an_interrupted_study_resumes_without_repeating_finished_trials(tmp_path, monkeypatch, mnist_root):
    import optuna

    import suite.harness
    from suite.tuning.study import open_study

    real_run_cell, calls = suite.harness.run_cell, []

    def interrupted_at_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_cell(*args, **kwargs)

    spec = _spec(trials=4)
    monkeypatch.setattr(suite.harness, "run_cell", interrupted_at_third)
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, spec)
    monkeypatch.setattr(suite.harness, "run_cell", real_run_cell)
    # a process killed outright leaves its trial `running`: leave one behind as well
    open_study(spec, f"sqlite:///{tmp_path / 'store' / 'tuning.db'}").ask()

    resumed, uri = _study(tmp_path, spec)
    assert resumed.new_runs == 2 and len(resumed.trials) == 4
    children = [r for r in _tuning_runs(uri) if r.data.tags.get("tuning.role") == "trial"]
    assert sorted(r.data.tags["status"] for r in children) == ["finished"] * 4
    states = [t.state for t in open_study(spec, f"sqlite:///{tmp_path / 'store' / 'tuning.db'}").get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4 and optuna.trial.TrialState.RUNNING not in states

    straight, _ = _study(tmp_path, spec, "straight")  # the same study, never interrupted
    assert [t.settings for t in resumed.trials] == [t.settings for t in straight.trials]
    assert resumed.best.settings == straight.best.settings


def test_a_study_never_evaluates_the_test_split(tmp_path, monkeypatch, mnist_root):
    import suite.harness
    from suite.tracking import Tracker

    real_evaluate, splits = suite.harness.evaluate, []

    def recording(method, data, split):
        splits.append(split)
        return real_evaluate(method, data, split)

    monkeypatch.setattr(suite.harness, "evaluate", recording)
    _, uri = _study(tmp_path, _spec(trials=2))
    assert splits and set(splits) == {"val"}
    trials = [r for r in _tuning_runs(uri) if r.data.tags.get("tuning.role") == "trial"]
    assert trials and not any(k.startswith("test_") for r in trials for k in r.data.metrics)

    # the instrument sees the test split when a normal run evaluates it
    suite.harness.run_cell(BP_MLP, Tracker(f"sqlite:///{tmp_path / 'normal.db'}"))
    assert "test" in splits


BAD_TUNE_INPUTS = [
    (["--space", "lrr=log:1e-4:1"], r"unknown parameter 'lrr' in the search space\. Did you mean 'lr'"),
    (["--space", "lr=log:1:1e-4"], r"log-uniform range \[1, 0\.0001\] is empty"),
    (["--space", "lr=uniform:0.5:0.5"], r"uniform range \[0\.5, 0\.5\] is empty"),
    (["--space", "lr=uniform:0:1"], r"search space of 'lr' .*'lr'=0\.0 is out of range"),
    (["--space", "lr=choice:"], r"at least one choice"),
    (["--space", "epochs=int:1:3"], r"'epochs' is a run setting"),
    (["--space", "lr=normal:0:1"], r"expected log:LOW:HIGH"),
    (["--trials", "0"], r"at least 1 trial"),
    (["--sampler", "sobol"], r"unknown sampler 'sobol'"),
    (["--val-fraction", "0"], r"needs a validation split"),
    (["--methods", "bq"], r"unknown method 'bq'.*Did you mean 'bp'"),
]


@pytest.mark.parametrize("extra,message", BAD_TUNE_INPUTS)
def test_bad_tuning_input_exits_2_before_any_compute(extra, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "summary", "--profile", "smoke", "--models", "mlp", *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_tuned_settings_apply_to_matching_cells_only_when_selected(tmp_path):
    from suite.experiments import EXPERIMENTS
    from suite.tuning import settings

    path = tmp_path / "tuned.json"
    entry = {"experiment": "summary", "profile": "smoke", "method": "dfa", "model": "cnn", "dataset": "mnist",
             "overrides": {"lr": "0.02"}, "settings": {"lr": "0.003"}, "trials": 8, "sampler": "tpe",
             "sampler_seed": 0, "val_fraction": 0.1, "objective": "final-epoch validation accuracy"}
    settings.save(path, [entry])

    def dfa_cnn_lr(seeds=1):
        cells = EXPERIMENTS["summary"].cells("smoke", seeds)
        return {c.seed: dict(c.overrides).get("lr") for c in cells if (c.method, c.model) == ("dfa", "cnn")}

    with settings.selected("tuned", path):
        assert dfa_cnn_lr(seeds=2) == {0: "0.003", 1: "0.003"}  # every training seed
        note = settings.tuning_note("summary", "smoke")
        assert "8 trials per method and cell" in note and "10% of the training set" in note
        assert dfa_cnn_lr() != {0: None} and settings.tuning_note("summary", "quick") == ""
    with settings.selected("defaults", path):
        assert dfa_cnn_lr() == {0: "0.02"} and settings.tuning_note("summary", "smoke") == ""
    # a changed experiment override is another identity: the entry no longer applies
    settings.save(path, [entry | {"overrides": {"lr": "0.05"}}])
    with settings.selected("tuned", path):
        assert dfa_cnn_lr() == {0: "0.02"}


def test_grid_points_by_hand():
    from suite.tuning.space import grid_points
    points = [p["lr"] for p in grid_points({"lr": LogUniform(1e-4, 1.0)}, 5, seed=0)]
    assert points == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert [p["m"] for p in grid_points({"m": Uniform(0.0, 1.0)}, 3, seed=0)] == pytest.approx([0.0, 0.5, 1.0])
    both = grid_points({"lr": LogUniform(1e-2, 1.0), "opt": Categorical(("sgd", "adam"))}, 6, seed=0)
    assert len(both) == 6 and {p["opt"] for p in both} == {"sgd", "adam"}
    assert sorted({round(math.log10(p["lr"]), 6) for p in both}) == [-2.0, -1.0, 0.0]


def test_list_methods_shows_each_search_space(capsys):
    assert main(["list", "methods"]) == 0
    assert "[tune: log-uniform [0.0001, 1]]" in capsys.readouterr().out


def test_a_resumed_study_keeps_the_provenance_of_its_trials(tmp_path):
    """Re-deriving the file from finished studies (no new trial) must not restamp entries with
    today's commit and date; a study that ran trials does."""
    from suite.tuning import settings

    path = tmp_path / "tuned.json"
    base = {"experiment": "summary", "profile": "quick", "method": "bp", "model": "cnn", "dataset": "mnist",
            "overrides": {}, "settings": {"lr": "0.02"}, "trials": 8, "study": "s1"}
    settings.upsert(path, base | {"commit": "old", "date": "then", "optuna": "5.0.0"})
    settings.upsert(path, base | {"commit": "new", "date": "now", "optuna": "5.0.0"}, new_trials=0)
    assert (settings.load(path)[0]["commit"], settings.load(path)[0]["date"]) == ("old", "then")
    settings.upsert(path, base | {"commit": "new", "date": "now", "optuna": "5.0.0"}, new_trials=3)
    assert (settings.load(path)[0]["commit"], settings.load(path)[0]["date"]) == ("new", "now")
    assert len(settings.load(path)) == 1
