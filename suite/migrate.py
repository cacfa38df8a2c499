"""`bpsuite migrate`: bring an existing MLflow store up to the current conventions. Idempotent.

* Metric keys that runs logged before the metrics had namespaces (each method's declarations with
  `was=`, suite/metrics.py) are renamed, so reports that read declared keys find them.
* MLflow's own run status is made to follow the suite's `status` tag (`tracking.MLFLOW_STATUS`):
  a diverged run shows as FAILED and a skipped one as KILLED in the UI, not as a green FINISHED.

Only SQLite stores (`sqlite:///path`, the suite's default) are supported: MLflow has no API to
rename a metric, so this edits its `metrics` and `latest_metrics` tables directly, in one
transaction per store.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from suite.errors import UsageError
from suite.metrics import Metric

TABLES = ("metrics", "latest_metrics")


def renamed_declarations() -> dict[str, tuple[Metric, ...]]:
    """Per method, its declarations that had an older name. Per method because one old key can
    have two new names (`modelled_speedup`: lp/ for the penalty methods, mgrit/ for MGRIT)."""
    from suite.methods import METHODS
    return {name: tuple(m for m in method.declared_metrics() if m.was) for name, method in METHODS.items()}


def new_name(key: str, method: str, renames: dict[str, tuple[Metric, ...]] | None = None) -> str | None:
    """The current name of a key `method` logged before the namespaces (None: not renamed)."""
    for metric in (renamed_declarations() if renames is None else renames).get(method, ()):
        new = metric.renamed_from(key)
        if new:
            return new
    return None


def _sqlite_path(uri: str) -> Path:
    if not uri.startswith("sqlite:///"):
        raise UsageError(f"migrate works on SQLite MLflow stores (sqlite:///path), not {uri}")
    path = Path(uri[len("sqlite:///"):])
    if not path.exists():
        raise UsageError(f"no MLflow store at {path}")
    return path


def migrate_run_statuses(uri: str) -> Counter:
    """Set each ended run's MLflow status from its suite `status` tag; returns {suite status →
    runs changed}. Running runs are left alone (their process owns them)."""
    from suite.tracking import MLFLOW_STATUS

    con = sqlite3.connect(_sqlite_path(uri))
    try:
        changed: Counter = Counter()
        with con:
            rows = con.execute("SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t "
                               "ON t.run_uuid = r.run_uuid AND t.key = 'status'").fetchall()
            for run, mlflow_status, status in rows:
                wanted = MLFLOW_STATUS.get(status)
                if wanted and wanted != mlflow_status:
                    con.execute("UPDATE runs SET status = ? WHERE run_uuid = ?", (wanted, run))
                    changed[status] += 1
        return changed
    finally:
        con.close()


def migrate_metric_keys(uri: str) -> Counter:
    """Rename old keys in the store at `uri`; returns {old key → runs renamed} over both tables."""
    con = sqlite3.connect(_sqlite_path(uri))
    try:
        method_of = dict(con.execute("SELECT run_uuid, value FROM tags WHERE key = 'method'"))
        renamed: Counter = Counter()
        renames = renamed_declarations()
        with con:  # one transaction: all renamed or none
            for table in TABLES:
                pairs = con.execute(f"SELECT DISTINCT run_uuid, key FROM {table}").fetchall()
                for run, key in pairs:
                    new = new_name(key, method_of.get(run, ""), renames)
                    if new and new != key:
                        con.execute(f"UPDATE {table} SET key = ? WHERE run_uuid = ? AND key = ?", (new, run, key))
                        if table == "latest_metrics":
                            renamed[key] += 1
        return renamed
    finally:
        con.close()
