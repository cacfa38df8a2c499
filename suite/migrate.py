"""`bpsuite migrate`: rename the metric keys that runs logged before the metrics had namespaces
(each method's declarations with `was=`, suite/metrics.py) in an existing MLflow store, so reports that read declared keys find
them. Idempotent: a key already under its new name is left alone.

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


def migrate_metric_keys(uri: str) -> Counter:
    """Rename old keys in the store at `uri`; returns {old key → runs renamed} over both tables."""
    if not uri.startswith("sqlite:///"):
        raise UsageError(f"migrate works on SQLite MLflow stores (sqlite:///path), not {uri}")
    path = Path(uri[len("sqlite:///"):])
    if not path.exists():
        raise UsageError(f"no MLflow store at {path}")
    con = sqlite3.connect(path)
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
