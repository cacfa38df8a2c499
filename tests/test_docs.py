"""Every example in README.md and docs/*.md is executed or checked here, so none can rot.

A fenced block whose info string ends in a marker (docs/extending.md, "Examples in the docs are
tested") is taken line by line:

* ```` ```sh runnable ````: each `bpsuite` line is run in this process on the smoke profile, offline,
  with a temporary store, output folders and settings file put in place of its own (`--profile`
  becomes smoke, `--seeds`/`--jobs` 1, `--trials` 2), so nothing under results/ is written;
  `bpsuite ui` is run with the server replaced by a stand-in (the store is checked, nothing
  served); `python -c CODE` is executed.
* ```` ```sh checked ````: for what needs CIFAR, a GPU or hours: each `bpsuite` line is parsed by
  bpsuite's own parser and every cell it names is resolved and its model built (names, `--set`
  keys and values validated), nothing trained.

In both, `nox -s NAME -- ARGS` must name a session of noxfile.py and ARGS parse as its `bpsuite`
command; `pytest PATHS` must name test files that exist, `python -m MODULE` a module that exists.
A marked line of any other form fails. The doc's example method (docs/extending.md) is built and
trained by the last tests.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKERS = ("runnable", "checked")
FENCE = re.compile(r"^\s*```+\s*(?P<info>[^`]*)$")
# the `bpsuite` command each nox session runs (noxfile.py); sessions absent here take no bpsuite args
NOX_COMMAND = {"reproduce": "reproduce", "tune": "tune", "figures": "report", "ui": "ui"}


@dataclass(frozen=True)
class Example:
    doc: str  # path relative to the repository
    line: int  # 1-based line of the command in the doc
    marker: str
    argv: tuple[str, ...]

    def __str__(self):
        return f"{self.doc}:{self.line}"


def marked_blocks(text: str):
    """(language, marker, [(line number, line)]) for each fenced block whose info string ends in a
    marker (the language: the info string's first word, "" when it is the marker alone)."""
    block, marker, language = None, None, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence and block is None:
            words = fence["info"].split()
            marker = words[-1] if words and words[-1] in MARKERS else None
            language = words[0] if len(words) > 1 else ""
            block = []
        elif fence:
            if marker:
                yield language, marker, block
            block, marker = None, None
        elif block is not None:
            block.append((number, line))


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line, code) of each marked python block of a doc, its list-item indent removed."""
    import textwrap
    return [(lines[0][0], textwrap.dedent("\n".join(line for _, line in lines)))
            for language, _, lines in marked_blocks(path.read_text(encoding="utf-8")) if language == "python"]


def examples_of(path: Path) -> list[Example]:
    out = []
    for language, marker, lines in marked_blocks(path.read_text(encoding="utf-8")):
        if language == "python":
            continue
        pending, start = "", None
        for number, line in lines:
            start = start or number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            argv = shlex.split(pending + line, comments=True)
            pending, first = "", start
            start = None
            if argv:
                out.append(Example(str(path.relative_to(REPO)), first, marker, tuple(argv)))
    return out


EXAMPLES = [ex for doc in DOCS for ex in examples_of(doc)]


def nox_sessions() -> set[str]:
    tree = ast.parse((REPO / "noxfile.py").read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any("session" in ast.unparse(d) for d in node.decorator_list)}


def test_the_docs_have_marked_examples():
    docs = {ex.doc for ex in EXAMPLES}
    assert "README.md" in docs and "docs/extending.md" in docs
    assert {ex.argv[0] for ex in EXAMPLES if ex.doc == "README.md"} >= {"nox", "bpsuite"}


def test_marker_recognition():
    text = "```sh runnable\nbpsuite list models\n```\n```sh\nbpsuite not-run\n```\n```bash checked\na \\\n  b\n```\n"
    assert list(marked_blocks(text)) == [("sh", "runnable", [(2, "bpsuite list models")]),
                                         ("bash", "checked", [(8, "a \\"), (9, "  b")])]


# --- smoke-ifying and running one example -------------------------------------------------------

def _set_option(argv: list[str], flag: str, value: str | None) -> list[str]:
    """argv with `flag` set to `value` (replaced where given, appended where not; value None: removed)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out + ([flag, value] if value is not None else [])


def smoke_argv(argv: list[str], work: Path) -> list[str]:
    """A `bpsuite` command line (without `bpsuite`) made small and kept off the committed files."""
    command = argv[0]
    store = f"sqlite:///{work / 'mlruns.db'}"
    if command in ("run", "reproduce", "tune", "report"):
        argv = _set_option(argv, "--profile", "smoke")
    if command in ("reproduce", "report"):
        argv = _set_option(argv, "--seeds", "1")
    if command == "reproduce":
        argv = _set_option(_set_option(argv, "--jobs", "1"), "--executor", None)
    if command == "tune":
        argv = _set_option(argv, "--trials", "2")
        argv = _set_option(argv, "--settings-file", str(work / "tuned-settings.json"))
        argv = _set_option(argv, "--storage", None)
    if command in ("run", "reproduce", "tune", "report", "migrate"):
        argv = _set_option(argv, "--tracking-uri", store)
    if command in ("reproduce", "tune", "report"):
        argv = _set_option(argv, "--results-dir", str(work / "results"))
        argv = _set_option(argv, "--figures-dir", str(work / "figures"))
    return argv


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One store and output folder for all the examples, in doc order (a report reads what a
    `reproduce` before it wrote); the store exists from the start, as `report` requires."""
    from suite.tracking import Tracker
    path = tmp_path_factory.mktemp("docs")
    Tracker(f"sqlite:///{path / 'mlruns.db'}")
    return path


def _stand_in_server(monkeypatch):
    """`bpsuite ui` with MLflow's server replaced: the store and the arguments are checked, nothing is
    served. Returns the command lines the server would have been started with."""
    from suite import cli, shutdown
    started = []

    class Server:
        pid = 0

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(cli.subprocess, "Popen", Server)
    monkeypatch.setattr(cli, "check_port", lambda host, port: None)  # 5000 may be taken on this machine
    monkeypatch.setattr(shutdown, "end_group", lambda server: None)
    monkeypatch.setattr(shutdown, "group_watchdog", lambda pgid: None)
    return started


def check_bpsuite(argv: list[str]) -> None:
    """Parse a command line with bpsuite's own parser and resolve every cell it names, training nothing."""
    import torch

    from suite.cli import build_parser
    from suite.config import Cell, resolve
    from suite.data import DATASETS
    from suite.experiments import EXPERIMENTS
    from suite.methods import METHODS
    from suite.models import build_model
    from suite.params import parse_assignments

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as err:
        if err.code == 0:  # --help
            return
        raise AssertionError(f"bpsuite {shlex.join(argv)}: the parser rejects it (exit {err.code})") from None
    if args.command == "run":
        overrides = parse_assignments(args.overrides) | ({"epochs": str(args.epochs)} if args.epochs else {})
        cfg = resolve(Cell(args.method, args.model, args.dataset, args.seed, args.profile,
                           tuple(sorted(overrides.items()))))
        spec = DATASETS[cfg.cell.dataset]
        model = build_model(cfg.cell.model, spec.input_shape, spec.num_classes)
        METHODS[cfg.cell.method](cfg.hparams).reject_settings(model, cfg.train, torch.device("cpu"))
    elif args.command in ("reproduce", "report"):
        for name in args.experiments:
            assert name in EXPERIMENTS, f"no experiment {name!r}"
            for cell in EXPERIMENTS[name].cells(args.profile if args.profile != "best" else "quick", 1):
                resolve(cell)
    elif args.command == "tune":
        assert args.experiment in EXPERIMENTS, f"no experiment {args.experiment!r}"


def run_example(ex: Example, work: Path, monkeypatch, capsys) -> None:
    head, *rest = ex.argv
    if head == "bpsuite":
        if ex.marker == "checked" or rest[:1] == ["--help"]:
            check_bpsuite(rest)
            return
        from suite import cli
        if rest[0] == "ui":
            started = _stand_in_server(monkeypatch)
            monkeypatch.chdir(REPO)  # a relative store names the repository's, as from its root
            assert cli.main(list(rest)) == 0, capsys.readouterr()
            assert started and "--backend-store-uri" in started[0]
            assert "serving" in capsys.readouterr().out
            return
        monkeypatch.chdir(work)
        status = cli.main(smoke_argv(list(rest), work))
        assert status == 0, f"{ex}: bpsuite {shlex.join(rest)} exited {status}:\n{capsys.readouterr().err[-3000:]}"
    elif head == "nox":
        assert rest[:1] == ["-s"] and len(rest) >= 2, f"{ex}: expected `nox -s SESSION [-- ARGS]`"
        session, extra = rest[1], rest[2:]
        assert session in nox_sessions(), f"{ex}: noxfile.py has no session {session!r}"
        if extra:
            assert extra[0] == "--", f"{ex}: arguments to a session follow `--`"
            if session == "tests":
                assert all((REPO / a.split("::")[0]).exists() for a in extra[1:] if not a.startswith("-"))
            else:
                assert session in NOX_COMMAND, f"{ex}: session {session!r} takes no arguments"
                check_bpsuite([NOX_COMMAND[session], *extra[1:]])
    elif head == "pytest" or rest[:2] == ["-m", "pytest"]:
        paths = [a.split("::")[0] for a in (rest[2:] if head != "pytest" else rest) if not a.startswith("-")
                 and "/" in a]
        missing = [p for p in paths if not (REPO / p).exists()]
        assert paths and not missing, f"{ex}: no such test file(s) {missing}"
    elif head == "python" and rest[:1] == ["-m"]:
        assert importlib.util.find_spec(rest[1]) is not None, f"{ex}: no module {rest[1]}"
    elif head == "python" and rest[:1] == ["-c"]:
        code = compile(rest[1], str(ex), "exec")
        if ex.marker == "runnable":
            exec(code, {})
    else:
        raise AssertionError(f"{ex}: a marked block holds `{head} ...`, which this test does not know how to check")


# --- `bpsuite ui`: which store it serves ------------------------------------------------------------

def test_ui_serves_the_committed_store_of_the_repository_by_default(tmp_path, monkeypatch, capsys):
    """Without --tracking-uri, $MLFLOW_TRACKING_URI or a ./mlruns.db: results/mlruns.db of the
    repository, whatever the working directory, and the first line says so."""
    from suite.cli import COMMITTED_STORE, served_store
    from suite.tracking import default_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    committed = f"sqlite:///{REPO / 'results' / 'mlruns.db'}"
    assert COMMITTED_STORE == REPO / "results" / "mlruns.db"
    assert served_store(None, {}, default_uri()) == (committed, "the committed runs: no ./mlruns.db here")
    assert served_store("sqlite:///other.db", {"MLFLOW_TRACKING_URI": "sqlite:///env.db"}, default_uri())[0] \
        == "sqlite:///other.db"
    assert served_store(None, {"MLFLOW_TRACKING_URI": "sqlite:///env.db"}, default_uri())[0] == "sqlite:///env.db"
    assert list(tmp_path.iterdir()) == []  # choosing made no store

    from suite import cli
    started = _stand_in_server(monkeypatch)
    assert cli.main(["ui"]) == 0
    assert started[0][started[0].index("--backend-store-uri") + 1] == committed
    assert f"serving {committed} (the committed runs" in capsys.readouterr().out

    (tmp_path / "mlruns.db").write_bytes(b"")  # a store here (what `bpsuite run` just wrote) comes first
    assert served_store(None, {}, default_uri()) == (default_uri(), "this directory's store, ./mlruns.db")


# --- docs/extending.md: its method, model, dataset and experiment, registered for one test ----------

EXTENDING = REPO / "docs" / "extending.md"


def test_python_examples_are_those_of_extending_md():
    """Only docs/extending.md holds marked python blocks (the `extended` fixture executes them)."""
    assert {doc.name for doc in DOCS if python_blocks(doc)} == {"extending.md"}
    assert len(python_blocks(EXTENDING)) == 4  # a method, a model, a dataset, an experiment


@pytest.fixture
def extended(monkeypatch):
    """Each python block of docs/extending.md executed as a module of its own and what it defines
    registered (its method, model, dataset, experiment), all removed again after the test."""
    import sys
    import types

    from suite.data.sources import DATASETS, DatasetSpec
    from suite.experiments import EXPERIMENTS, Experiment
    from suite.methods import METHODS, Method
    from suite.models import MODELS, StagedModel

    added = {}
    for i, (line, code) in enumerate(python_blocks(EXTENDING)):
        module = types.ModuleType(f"docs_extending_example_{i}")
        monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
        exec(compile(code, f"{EXTENDING}:{line}", "exec"), module.__dict__)
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != module.__name__ and not isinstance(value, (DatasetSpec,
                                                                                                 Experiment)):
                continue  # imported, not defined here
            if isinstance(value, type) and issubclass(value, Method) and value is not Method:
                monkeypatch.setitem(METHODS, value.name, value)
                added["method"] = value.name
            elif isinstance(value, DatasetSpec):
                monkeypatch.setitem(DATASETS, value.name, value)
                added["dataset"] = value.name
            elif isinstance(value, Experiment):
                monkeypatch.setitem(EXPERIMENTS, value.name, value)
                added["experiment"] = value.name
            elif isinstance(value, types.FunctionType) and value.__annotations__.get("return") in (
                    "StagedModel", StagedModel):
                name = value((1, 28, 28), 10, "").name
                monkeypatch.setitem(MODELS, name, value)
                added["model"] = name
    assert set(added) == {"method", "model", "dataset", "experiment"}, added
    return added


def test_extending_method_passes_the_conformance_tests(extended):
    """What `pytest tests/test_conformance.py -k my-method` runs, with the doc's method registered
    (but resnet20, which only makes it slower: the method is plain SGD on a loss)."""
    from tests import test_conformance as conformance
    method = extended["method"]
    for model in [m for m in conformance.MODELS if m != "resnet20"]:
        conformance.test_method_contract(method, model)
    conformance.test_hparams_are_frozen_documented_and_valid_by_default(method)
    conformance.test_no_hyper_parameter_is_named_like_a_run_setting(method)
    conformance.test_close_works_before_setup(method)


def test_extending_model_passes_the_conformance_tests(extended):
    """What `pytest tests/test_conformance.py -k tiny-cnn` runs once the model is in its MODELS."""
    from suite.methods import METHODS
    from tests import test_conformance as conformance
    for method in sorted(METHODS):
        conformance.test_method_contract(method, extended["model"])


def test_extending_method_trains_a_smoke_cell_through_the_harness(extended, work, mnist_root):
    from suite.config import Cell
    from suite.harness import run_cell
    from suite.tracking import Tracker
    tracker = Tracker(f"sqlite:///{work / 'mlruns.db'}")
    result = run_cell(Cell(extended["method"], extended["model"], "mnist", 0, "smoke"), tracker, data_root=mnist_root)
    assert result.status == "finished", result.reason
    logged = tracker.history([result.run_id], ["my/weight_norm"])
    assert len(logged) and (logged["value"] > 0).all()


@pytest.mark.parametrize("ex", EXAMPLES, ids=str)
def test_example(ex, work, monkeypatch, capsys, request):
    if ex.doc == str(EXTENDING.relative_to(REPO)):
        request.getfixturevalue("extended")
    run_example(ex, work, monkeypatch, capsys)
