"""The command line: listings, a run, and bad input — each a clear error before any compute,
exit status 2, and nothing written to the tracking store."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from suite.cli import main

BAD_INPUTS = [
    (["run", "bp", "resnt20", "mnist"], "Did you mean 'resnet20'"),
    (["run", "bq", "mlp", "mnist"], "Did you mean 'bp'"),
    (["run", "bp", "mlp", "mnistt"], "Did you mean 'mnist'"),
    (["run", "bp", "timm:resnet1800", "mnist"], "unknown timm model"),
    (["reproduce", "summmary"], "Did you mean 'summary'"),
    (["run", "bp", "mlp", "mnist", "--set", "lr"], "malformed override 'lr'"),
    (["run", "bp", "mlp", "mnist", "--set", "=3"], "malformed override"),
    (["run", "bp", "mlp", "mnist", "--set", "lrr=0.1"], "unknown key 'lrr'.*Did you mean 'lr'"),
    (["run", "bp", "mlp", "mnist", "--set", "lr=fast"], "lr=fast: expected float"),
    (["run", "bp", "mlp", "mnist", "--set", "epochs=2.5"], "epochs=2.5: expected int"),
    (["run", "bp", "mlp", "mnist", "--set", "lr=-0.1"], "'lr'=-0.1 is out of range"),
    (["run", "bp", "mlp", "mnist", "--set", "batch_size=0"], "'batch_size'=0 is out of range"),
    (["run", "bp", "mlp", "mnist", "--set", "optimizer=rmsprop"], "choose one of sgd, adam"),
    (["run", "bp", "mlp", "mnist", "--profile", "huge"], "unknown profile 'huge'"),
    (["list", "method"], "Did you mean 'methods'"),
    (["run", "penalty", "odenet:4-4", "mnist", "--set", "stages=5"], "stages=5 is invalid .* 2 ≤ stages ≤ 4"),
    (["run", "penalty", "resnet20", "mnist", "--set", "stages=1"], "'stages'=1 is out of range"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS)
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_missing_dataset_is_an_error_naming_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BPSUITE_OFFLINE", "1")
    from suite.data.sources import load_split
    load_split.cache_clear()
    assert main(["run", "bp", "mlp", "mnist", "--data-root", str(tmp_path / "nowhere")]) == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (tmp_path / "mlruns.db").exists()


def test_unreachable_tracking_server_is_an_error(tmp_path, monkeypatch, capsys, mnist_root):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["run", "bp", "mlp", "mnist", "--profile", "smoke", "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert code == 2 and "unreachable" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_list_shows_registries(capsys):
    for what, expected in [("methods", "bp"), ("models", "resnet20"), ("datasets", "cifar100"),
                           ("experiments", "summary"), ("profiles", "smoke")]:
        assert main(["list", what]) == 0
        assert expected in capsys.readouterr().out


def test_list_methods_shows_the_optimiser_settings_once_and_one_method_whole(capsys):
    from suite.methods import METHODS
    from suite.params import describe
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert all(re.search(rf"^{re.escape(name)} ", out, re.M) for name in METHODS)
    assert len(re.findall(r"^\s+nesterov ", out, re.M)) == 1  # shared: listed once
    assert main(["list", "methods", "dfa"]) == 0
    one = capsys.readouterr().out
    keys = re.findall(r"^\s+(\w+)\s+=", one, re.M)
    assert keys == [key for key, _, _ in describe(METHODS["dfa"].HParams)]  # every setting, lr included
    assert main(["list", "methods", "dfaa"]) == 2 and "Did you mean 'dfa'" in capsys.readouterr().err
    assert main(["list", "models", "x"]) == 2


def test_every_subcommand_help_has_a_description_defaults_and_examples_that_parse():
    import shlex

    from suite.cli import EXAMPLES, build_parser
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(EXAMPLES)
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description and "examples:" in text, name
        for action in sub._actions:  # every option with a value to show shows it
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
                assert f"default: {action.default}" in " ".join(text.split()) or "default" in action.help, \
                    (name, action.dest)
        for example in EXAMPLES[name]:
            argv = shlex.split(example.split("#")[0])
            assert argv[0] == "bpsuite"
            assert parser.parse_args(argv[1:]).command == name  # an example that no longer parses fails here


def test_run_and_rerun_from_the_command_line(tmp_path, monkeypatch, capsys, mnist_root):
    monkeypatch.chdir(tmp_path)
    argv = ["run", "bp", "mlp", "mnist", "--profile", "smoke", "--epochs", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "finished" in out
    # one line per epoch, accuracies in %, as logged; then the run id and how to open it
    from suite.tracking import Tracker
    run = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}").runs_frame().iloc[0]
    history = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}").history([run["run_id"]], ["test_acc"])
    for step, acc in zip(history["step"], history["value"]):
        assert re.search(rf"epoch {step + 1}/2  loss \d\.\d{{4}}  .*test acc {100 * acc:.2f}%  \d+\.\d\d s", out), out
    assert f"run id {run['run_id']}; browse it: bpsuite ui --tracking-uri sqlite:///" in out
    mlflow_run = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}").client.get_run(run["run_id"])
    assert mlflow_run.info.run_name == "bp/mlp/mnist/s0[epochs=2]"
    from suite.config import Cell
    trial = Cell("bp", "mlp", "mnist", 0, "quick", (("eval_test", "false"), ("lr", "0.00010000000000000009")))
    assert trial.run_name() == "bp/mlp/mnist/s0[eval_test=false,lr=0.0001]"  # floats rounded
    assert len(Cell("bp", "mlp", "mnist", 0, "quick", (("k", "v" * 300),)).run_name()) == 60
    assert mlflow_run.data.tags["cell_label"] == "bp/mlp/mnist/s0[epochs=2]"
    assert mlflow_run.data.tags["mlflow.source.git.commit"] == run["git_commit"].removesuffix("-dirty")
    assert main(argv) == 0
    assert "cached" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path):
    out = subprocess.run([sys.executable, "-m", "suite", "list", "datasets"], capture_output=True, text=True,
                         cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.returncode == 0 and "mnist" in out.stdout


def test_reproduce_warns_before_training_from_a_dirty_tree(monkeypatch, capsys):
    import suite.provenance
    from suite.cli import warn_if_dirty
    for commit, warned in (("0123456789abcdef-dirty", True), ("0123456789abcdef", False)):
        monkeypatch.setattr(suite.provenance, "git_commit", lambda c=commit: c)
        warn_if_dirty()
        assert ("uncommitted changes" in capsys.readouterr().err) == warned


def test_progress_lines_stay_short_and_estimate_only_from_trained_cells():
    import io

    from suite.config import Cell
    from suite.harness import CellResult
    from suite.progress import LABEL_CHARS, GridProgress

    long = Cell("dfa", "cnn", "mnist", 0, "smoke", tuple((f"key{i}", "x" * 20) for i in range(12)))
    cells = [long, Cell("bp", "mlp", "mnist", 1, "smoke"), Cell("bp", "mlp", "mnist", 2, "smoke")]
    out = io.StringIO()
    progress = GridProgress([c.label for c in cells], [1.0, 1.0, 1.0], stream=out, tty=False)
    progress.update(CellResult(cells[0], "cached"))
    progress.update(CellResult(cells[1], "finished", metrics={"test_acc": 0.5, "train_time": 1.0}))
    progress.update(CellResult(cells[2], "finished", metrics={"test_acc": 0.5, "train_time": 1.0}))
    lines = out.getvalue().splitlines()
    assert len(lines[0]) < LABEL_CHARS + 60 and "…]" in lines[0]  # was the whole 300-character label
    assert "left ≈ ?" in lines[0] and "left ≈ ?" in lines[1]  # nothing trained yet / one cell: no estimate
    assert "left ≈ 0m00s" in lines[2]  # the cached cell's cost left the estimate: nothing is left
    tty = io.StringIO()
    bar = GridProgress([c.label for c in cells], [1.0] * 3, stream=tty, tty=True)
    bar.update(CellResult(cells[0], "finished", metrics={"test_acc": 0.5}))
    bar.close()
    assert "[1/3]" in tty.getvalue()  # a line per finished cell above the bar


def test_retrain_other_commits_supersedes_only_other_commits_and_keeps_the_old_runs(tmp_path, monkeypatch):
    import suite.provenance
    from suite.cli import cached_cells, clean_commit_or_stop, retire_other_commits
    from suite.config import Cell, resolve
    from suite.errors import UsageError
    from suite.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'store.db'}")
    cells = [Cell("bp", "mlp", "mnist", s, "smoke") for s in range(3)]
    commits = ["a" * 40 + "-dirty", "b" * 40, "a" * 40]
    for cell, commit in zip(cells, commits):
        handle = tracker.claim(resolve(cell).cell_hash, {"git_commit": commit}, cell.run_name())
        handle.log_metrics({"test_acc": 0.5})
        handle.finish("finished")
    retire_other_commits(tracker, cells, "a" * 40)
    assert cached_cells(tracker, cells) == {cells[2]}  # the dirty and the other commit's runs retrain
    runs = tracker.runs_frame()
    assert sorted(runs["status"]) == ["finished", "superseded", "superseded"] and len(runs) == 3
    assert runs["m.test_acc"].eq(0.5).all()  # superseded runs keep their metrics: nothing is lost
    monkeypatch.setattr(suite.provenance, "git_commit", lambda: "c" * 40 + "-dirty")
    with pytest.raises(UsageError, match="needs a clean git work tree"):
        clean_commit_or_stop()
