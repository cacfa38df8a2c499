"""Declared metrics: declarations match exactly the keys they name, every method's keys live
under a namespace, a run that logs an undeclared key fails with the key named, and `bpsuite
migrate` renames the keys of an old store once."""

from __future__ import annotations

import sqlite3

import pytest

from suite.cli import main
from suite.config import Cell
from suite.harness import run_cell
from suite.methods import METHODS
from suite.methods.bp import BP
from suite.metrics import HARNESS, Metric, undeclared
from suite.migrate import migrate_metric_keys, new_name


def test_placeholders_match_one_segment_and_indices_are_numbers():
    unit = Metric("align/{unit}_mean", "cos", "measured", "")
    assert unit.matches("align/3_mean") and unit.matches("align/12_mean")
    assert not unit.matches("align/mean") and not unit.matches("align/3_mean/x") and not unit.matches("align/x_mean")
    assert unit.keys(["align/10_mean", "align/2_mean", "align/mean", "walign/2_deg"]) == ["align/2_mean", "align/10_mean"]
    assert unit.index("align/12_mean", "unit") == 12
    phase = Metric("phase_time.{phase}", "s", "measured", "")
    assert phase.values("phase_time.3 local layers") == {"phase": "3 local layers"}
    assert phase.name(phase="serial") == "phase_time.serial"
    with pytest.raises(ValueError, match="kind"):
        Metric("x", "1", "guessed", "")


def test_every_method_metric_is_namespaced_and_declared_once():
    harness_keys = {m.key for m in HARNESS}
    for name, cls in METHODS.items():
        keys = [m.key for m in cls.METRICS]
        assert len(keys) == len(set(keys)), name
        for metric in cls.METRICS:
            assert metric.namespace, f"{name}: {metric.key} has no namespace"
            assert metric.key not in harness_keys


def test_undeclared_detects_only_unknown_keys():
    declared = BP.declared_metrics()
    assert undeclared(["test_acc", "phase_time.serial", "align/0_mean", "mystery"], declared) == \
        ["align/0_mean", "mystery"]


class Chatty(BP):
    name = "chatty"

    def end_epoch(self, epoch):
        return {"chatty_score": 1.0}


def test_a_run_that_logs_an_undeclared_key_fails_naming_it(tracker, mnist_root, monkeypatch):
    monkeypatch.setitem(METHODS, Chatty.name, Chatty)
    cell = Cell("chatty", "mlp", "mnist", 0, "smoke")
    result = run_cell(cell, tracker)
    assert result.status == "failed"
    assert "chatty_score" in result.reason and "METRICS" in result.reason


def test_new_names_of_old_keys():
    assert new_name("violation_b2", "penalty") == "lp/violation_b2"
    assert new_name("mgrit_probe_adj_rel_it3", "mgrit") == "mgrit/probe_adj_rel_it3"
    assert new_name("modelled_speedup", "augmented-lagrangian") == "lp/modelled_speedup"
    assert new_name("modelled_speedup", "mgrit") == "mgrit/modelled_speedup"
    assert new_name("feedback_mb", "dfa") == "feedback/matrix_mb"
    assert new_name("test_acc", "dfa") is None and new_name("lp/beta", "penalty") is None
    assert new_name("modelled_speedup", "bp") is None  # bp never logged it: no declaration renames it


def test_an_old_name_must_carry_the_same_placeholders():
    assert Metric("lp/violation_b{k}", "1", "measured", "", was="violation_b{k}").renamed_from("violation_b3") \
        == "lp/violation_b3"
    with pytest.raises(ValueError, match="same placeholders"):
        Metric("lp/violation_b{k}", "1", "measured", "", was="violation")


def test_migrate_renames_old_keys_once(tmp_path, tracker, mnist_root, capsys):
    result = run_cell(Cell("bp", "mlp", "mnist", 0, "smoke"), tracker)
    path = tmp_path / "mlruns.db"
    con = sqlite3.connect(path)
    with con:  # make the run look like an old mgrit run
        con.execute("UPDATE tags SET value = 'mgrit' WHERE key = 'method' AND run_uuid = ?", (result.run_id,))
        for table in ("metrics", "latest_metrics"):
            con.execute(f"UPDATE {table} SET key = 'modelled_speedup' WHERE key = 'train_time'")
            con.execute(f"UPDATE {table} SET key = 'mgrit_fwd_iters' WHERE key = 'images_per_s'")
    con.close()

    assert main(["migrate", "--tracking-uri", f"sqlite:///{path}"]) == 0
    assert "2 key(s) renamed" in capsys.readouterr().out
    run = tracker.client.get_run(result.run_id)
    assert {"mgrit/modelled_speedup", "mgrit/fwd_iters"} <= set(run.data.metrics)
    assert not {"modelled_speedup", "mgrit_fwd_iters"} & set(run.data.metrics)
    assert tracker.client.get_metric_history(result.run_id, "mgrit/fwd_iters")
    assert not migrate_metric_keys(f"sqlite:///{path}")  # a second pass finds nothing


def test_migrate_refuses_what_it_cannot_edit(tmp_path):
    assert main(["migrate", "--tracking-uri", "http://localhost:5000"]) == 2
    assert main(["migrate", "--tracking-uri", f"sqlite:///{tmp_path / 'absent.db'}"]) == 2


def test_migrate_sets_mlflow_status_from_the_suite_status(tmp_path, tracker, mnist_root):
    from suite.migrate import migrate_run_statuses

    runs = [run_cell(Cell("bp", "mlp", "mnist", seed, "smoke"), tracker) for seed in (0, 1)]
    con = sqlite3.connect(tmp_path / "mlruns.db")
    with con:  # an old store: the first run's suite status says diverged, MLflow still says FINISHED
        con.execute("UPDATE tags SET value = 'diverged' WHERE key = 'status' AND run_uuid = ?", (runs[0].run_id,))
    con.close()
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert migrate_run_statuses(uri) == {"diverged": 1}
    assert tracker.client.get_run(runs[0].run_id).info.status == "FAILED"
    assert tracker.client.get_run(runs[1].run_id).info.status == "FINISHED"
    assert not migrate_run_statuses(uri)  # a second pass finds nothing
