"""The only module that talks to MLflow: log runs, find finished cells, export runs to pandas.

Embedded by default (an SQLite file `mlruns.db` in the working directory); any `--tracking-uri`
works, e.g. `http://127.0.0.1:5000` for a shared tracking server.

One cell = one hash. Claiming a cell is race-safe across processes and hosts: a process creates
its run, then looks again; if an older live claim or a completed run exists, it deletes its own
run and leaves the cell alone. With the embedded SQLite store the whole claim also runs under an
exclusive file lock beside the database, so processes on one machine never interleave their
look-create-look sequences (without it, two processes can both keep their claim). A claim whose process is gone (same host: pid is dead; other
host: no heartbeat for `lease_s`) is marked `killed` and the cell is redone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first use of one SQLite file is unsupported
    fcntl = None

from suite.errors import StoreError, UsageError
from suite.store import opening_read_only, removed_if_new
from suite.store import read_only as read_only_uri

STATUSES = ("running", "finished", "skipped", "diverged", "failed", "killed", "superseded")
COMPLETE = ("finished", "skipped", "diverged")  # a rerun redoes only failed, killed and superseded cells
# MLflow's status for each ended suite status: the UI colours FINISHED green, so a run that did not
# train to its end must not be FINISHED (diverged: FAILED; skipped, could not run here: KILLED).
# A superseded run keeps the status it ended with.
MLFLOW_STATUS = {"finished": "FINISHED", "skipped": "KILLED", "diverged": "FAILED",
                 "failed": "FAILED", "killed": "KILLED"}
DEFAULT_EXPERIMENT = "bpsuite"


def default_uri(workdir: Path | None = None) -> str:
    return f"sqlite:///{(workdir or Path.cwd()).resolve() / 'mlruns.db'}"


def absolute_uri(uri: str) -> str:
    """`sqlite:///relative.db` made absolute, so that the store is the same file for every process
    that opens it (pool workers, Slurm jobs) whatever its working directory. Other URIs unchanged."""
    prefix = "sqlite:///"
    path = uri[len(prefix):]
    if not uri.startswith(prefix) or not path or path.startswith(":memory:") or Path(path).is_absolute():
        return uri
    return prefix + str(Path(path).expanduser().resolve())


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """A tracking server that does not answer is an error before any compute."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
    except (urllib.error.URLError, OSError) as err:
        raise UsageError(f"tracking server {uri} is unreachable ({err}). Start one with "
                         f"`mlflow server --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1` "
                         f"or drop --tracking-uri to use the embedded store.") from None


@contextlib.contextmanager
def _sqlite_file_lock(uri: str):
    """An exclusive advisory lock beside an SQLite store (a no-op for servers and on Windows)."""
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# MLflow logs a traceback of every database error it then raises; the raised error reaches the
# command, which reports a storage fault in a sentence (suite.store.store_problem) and shows any
# other error's traceback itself, so MLflow's copy is noise
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

RETRY_ATTEMPTS = 8  # waits 0.2, 0.4, … 1.4 s between them: 5.6 s in all


def _retry(fn, *args, attempts: int = RETRY_ATTEMPTS, **kwargs):
    """SQLite allows one writer at a time: retry briefly when another process holds the lock, a
    bounded number of times; a lock held past them ends the command with a message."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # mlflow wraps sqlalchemy's OperationalError in MlflowException
            if "locked" not in str(err).lower():
                raise
            if i == attempts - 1:
                raise StoreError(f"the store stayed locked by another process through {attempts} attempts "
                                 f"over {sum(0.2 * (k + 1) for k in range(attempts - 1)):.1f} s") from err
            time.sleep(0.2 * (i + 1))


class Tracker:
    """`read_only=True` (reports): the store must exist and hold `experiment`; it is opened through
    SQLite's read-only mode, takes no lock file and is never created, migrated or written."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, lease_s: float = 1800.0,
                 read_only: bool = False):
        from mlflow.tracking import MlflowClient


        self.uri = uri or default_uri()
        check_reachable(self.uri)
        self.lease_s = lease_s
        if read_only:
            with opening_read_only():
                self.client = MlflowClient(tracking_uri=read_only_uri(self.uri))
                exp = _retry(self.client.get_experiment_by_name, experiment)
            if exp is None:
                raise UsageError(f"the store {self.uri} holds no MLflow experiment '{experiment}': no runs "
                                 f"of this suite to report")
            self.experiment_id = exp.experiment_id
            return
        # MLflow migrates a new SQLite file on first use: one process at a time; a new file whose
        # set-up fails (a full disk) is removed, not left half made
        with _sqlite_file_lock(self.uri), removed_if_new(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(experiment)

    def _experiment(self, name: str) -> str:
        exp = _retry(self.client.get_experiment_by_name, name)
        if exp is not None:
            return exp.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:///"):
            artifacts = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        try:
            return _retry(self.client.create_experiment, name, artifact_location=artifacts)
        except Exception:  # created concurrently by another process
            return _retry(self.client.get_experiment_by_name, name).experiment_id

    # -- finding ---------------------------------------------------------------------------------
    def runs_for(self, cell_hash: str) -> list:
        return _retry(self.client.search_runs, [self.experiment_id],
                      filter_string=f"tags.cell_hash = '{cell_hash}'", max_results=1000)

    def completed(self, cell_hash: str):
        """The completed run of this cell, or None."""
        return next((r for r in self.runs_for(cell_hash) if r.data.tags.get("status") in COMPLETE), None)

    def _alive(self, run) -> bool:
        tags = run.data.tags
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
            try:
                os.kill(int(tags["pid"]), 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return time.time() - float(tags.get("heartbeat", "0")) < self.lease_s

    # -- claiming and logging -------------------------------------------------------------------
    def claim(self, cell_hash: str, tags: dict[str, str], run_name: str) -> RunHandle | None:
        """Start this cell's run, or return None if it is complete or being run elsewhere."""
        with _sqlite_file_lock(self.uri):
            return self._claim_unlocked(cell_hash, tags, run_name)

    def _claim_unlocked(self, cell_hash: str, tags: dict[str, str], run_name: str) -> RunHandle | None:
        for run in self.runs_for(cell_hash):
            status = run.data.tags.get("status")
            if status in COMPLETE:
                return None
            if status == "running":
                if self._alive(run):
                    return None
                self._set_status(run.info.run_id, "killed")
        now = time.time()
        run = _retry(self.client.create_run, self.experiment_id, run_name=run_name, tags={
            **tags, "cell_hash": cell_hash, "status": "running", "host": socket.gethostname(),
            "pid": str(os.getpid()), "heartbeat": f"{now:.3f}"})
        mine = (run.info.start_time, run.info.run_id)
        for other in self.runs_for(cell_hash):
            if other.info.run_id == run.info.run_id:
                continue
            status = other.data.tags.get("status")
            older_live = status == "running" and (other.info.start_time, other.info.run_id) < mine and self._alive(other)
            if status in COMPLETE or older_live:
                _retry(self.client.delete_run, run.info.run_id)
                return None
        return RunHandle(self, run.info.run_id)

    def _set_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        _retry(self.client.set_tag, run_id, "status", status)
        if reason:
            _retry(self.client.set_tag, run_id, "status_reason", reason[:5000])
        _retry(self.client.set_terminated, run_id, MLFLOW_STATUS[status])

    def supersede(self, run_ids: list[str], reason: str) -> None:
        """Retire complete runs so that their cells are trained again: each keeps its metrics and
        tags (nothing is deleted) and is tagged `status=superseded` with `superseded_reason`, which
        no report and no cache lookup reads."""
        for run_id in run_ids:
            _retry(self.client.set_tag, run_id, "superseded_reason", reason[:5000])
            _retry(self.client.set_tag, run_id, "status", "superseded")

    # -- runs that are not cells: a tuning study, the parent its trials nest under ------------------
    def start_run(self, run_name: str, tags: dict[str, str]) -> RunHandle:
        """A run with no cell hash (never claimed, never found by `completed`), status `running`."""
        run = _retry(self.client.create_run, self.experiment_id, run_name=run_name, tags={
            **tags, "status": "running", "host": socket.gethostname(), "pid": str(os.getpid()),
            "heartbeat": f"{time.time():.3f}"})
        return RunHandle(self, run.info.run_id)

    def find_runs(self, tag: str, value: str) -> list:
        """Runs whose tag `tag` equals `value`, oldest first."""
        runs = _retry(self.client.search_runs, [self.experiment_id],
                      filter_string=f"tags.`{tag}` = '{value}'", max_results=1000)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def nested_under(self, parent_run_id: str, tags: dict[str, str] | None = None) -> Tracker:
        """This tracker (same store and experiment), except that every run it claims is a child of
        `parent_run_id` (MLflow's `mlflow.parentRunId` tag: the UI shows it under its parent) and
        carries `tags`. The harness claims runs through it unchanged."""
        return _NestedTracker(self, {**(tags or {}), "mlflow.parentRunId": parent_run_id})

    # -- exporting --------------------------------------------------------------------------------
    def runs_frame(self, cell_hashes: list[str] | None = None, include_running: bool = False) -> pd.DataFrame:
        """One row per run: tags, params (`p.*`) and final metrics (`m.*`)."""
        runs = _retry(self.client.search_runs, [self.experiment_id], max_results=50000)
        rows = []
        wanted = set(cell_hashes) if cell_hashes is not None else None
        for r in runs:
            tags = r.data.tags
            if wanted is not None and tags.get("cell_hash") not in wanted:
                continue
            if not include_running and tags.get("status") == "running":
                continue
            row = {"run_id": r.info.run_id, **{k: v for k, v in tags.items() if not k.startswith("mlflow.")}}
            row |= {f"p.{k}": v for k, v in r.data.params.items()}
            row |= {f"m.{k}": v for k, v in r.data.metrics.items()}
            rows.append(row)
        return pd.DataFrame(rows)

    def history(self, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
        """Per-epoch values: columns run_id, key, step, value."""
        rows = []
        for run_id in run_ids:
            for key in keys:
                for m in _retry(self.client.get_metric_history, run_id, key):
                    rows.append({"run_id": run_id, "key": key, "step": m.step, "value": m.value})
        return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])

    def metric_keys(self, run_id: str) -> list[str]:
        return list(_retry(self.client.get_run, run_id).data.metrics)


class _NestedTracker(Tracker):
    """A view of a Tracker whose claimed runs carry extra tags (see `Tracker.nested_under`)."""

    def __init__(self, base: Tracker, claim_tags: dict[str, str]):
        self.__dict__.update(base.__dict__)  # the same client and experiment, not a second connection
        self.claim_tags = claim_tags

    def _claim_unlocked(self, cell_hash: str, tags: dict[str, str], run_name: str) -> RunHandle | None:
        return super()._claim_unlocked(cell_hash, {**tags, **self.claim_tags}, run_name)


@dataclass
class RunHandle:
    tracker: Tracker
    run_id: str

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            _retry(self.tracker.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            _retry(self.tracker.client.log_batch, self.run_id, metrics=items[i:i + 500])
        _retry(self.tracker.client.set_tag, self.run_id, "heartbeat", f"{time.time():.3f}")

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            _retry(self.tracker.client.set_tag, self.run_id, k, str(v)[:5000])

    def log_text(self, name: str, text: str) -> None:
        _retry(self.tracker.client.log_text, self.run_id, text, name)

    def log_artifact(self, path: Path) -> None:
        _retry(self.tracker.client.log_artifact, self.run_id, str(path))

    def log_json(self, name: str, obj: Any) -> None:
        self.log_text(name, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def finish(self, status: str, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.tracker._set_status(self.run_id, status, reason)

    def reopen(self) -> None:
        """Mark a terminated run `running` again (a resumed tuning study continues its parent run)."""
        _retry(self.tracker.client.update_run, self.run_id, status="RUNNING")
        self.set_tags({"status": "running", "pid": str(os.getpid()), "host": socket.gethostname(),
                       "heartbeat": f"{time.time():.3f}"})
