"""Checks a tracking URI, or an Optuna storage URL, and the store behind it, before any compute.

Every command names its store up front; this module decides, without writing anything, whether
that store can serve the command:

* **form**: `sqlite:///<path>` (three slashes; a relative path is made absolute at start-up),
  `http(s)://<host>` (a tracking server) or another SQLAlchemy database URL
  (`postgresql://`, `mysql://`, `mssql://`). Anything else is an error naming the accepted forms.
* **a store to write** (`run`, `reproduce`, `tune`, `migrate`): an SQLite file that exists must be
  the right kind of database, and it and its folder writable (SQLite writes its journal beside
  the file); a new file needs an existing, writable folder.
* **a store to read** (`report`, `ui`): the file must exist and be an MLflow store. `report` then
  opens it through SQLite's read-only mode (`read_only`), so nothing it does can change it.

Faults while a command runs (a full disk, a store made read-only meanwhile, a lock held past the
retries) end the command with `StoreError`'s message instead of a traceback (`store_problem`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from pathlib import Path

from suite.errors import StoreError, UsageError

SQLITE = "sqlite:///"
SERVER_SCHEMES = ("http://", "https://")
DATABASE_SCHEMES = ("postgresql://", "postgresql+psycopg2://", "mysql://", "mysql+pymysql://", "mssql://")
FORMS = "sqlite:///PATH (e.g. sqlite:///mlruns.db), http(s)://HOST:PORT (a tracking server), or a " \
        "postgresql://, mysql:// or mssql:// database URL"
SQLITE_MAGIC = b"SQLite format 3\x00"
# the tables that tell one program's SQLite file from another's
MLFLOW_TABLES = {"experiments", "runs", "metrics", "params", "tags"}
OPTUNA_TABLES = {"studies", "trials"}


def sqlite_path(uri: str) -> Path | None:
    """The file behind an `sqlite:///` URI (None for other URIs)."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def check_form(uri: str, what: str = "tracking URI") -> None:
    """A malformed URI or an unknown scheme is an error before anything opens it."""
    if uri.startswith(SQLITE):
        path = uri[len(SQLITE):]
        if not path or path.startswith(":memory:") or path.startswith("file:"):
            raise UsageError(f"{what} '{uri}' names no file: an in-memory store would lose every run. "
                             f"Give a file, e.g. sqlite:///mlruns.db")
        return
    if uri.startswith("sqlite:"):
        raise UsageError(f"{what} '{uri}' is malformed: SQLite URIs take three slashes before the path, "
                         f"sqlite:///mlruns.db (relative) or sqlite:////abs/path/mlruns.db")
    if uri.startswith(SERVER_SCHEMES) or uri.startswith(DATABASE_SCHEMES):
        rest = uri.split("://", 1)[1]
        if not rest.strip("/"):
            raise UsageError(f"{what} '{uri}' names no host. Accepted: {FORMS}")
        return
    raise UsageError(f"{what} '{uri}' has an unsupported scheme. Accepted: {FORMS}")


def sqlite_tables(path: Path) -> set[str]:
    """The tables of an SQLite file, read without writing to it. A file that is not SQLite, or a
    damaged one, is an error naming it."""
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if os.path.getsize(path) == 0:
        return set()  # SQLite's own "new database": nothing in it yet
    if head != SQLITE_MAGIC:
        raise UsageError(f"{path} is not an SQLite database (its first bytes are not SQLite's header)")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        raise UsageError(f"{path} is a damaged SQLite database ({err}); restore it from git or a copy") from None
    if ok != "ok":
        raise UsageError(f"{path} is a damaged SQLite database (integrity check: {ok}); restore it from "
                         f"git or a copy")
    return names


def _kind_error(path: Path, tables: set[str], wanted: str) -> UsageError:
    shown = ", ".join(sorted(tables)[:6]) + (", …" if len(tables) > 6 else "")
    other = " (an Optuna storage)" if OPTUNA_TABLES <= tables else \
        " (an MLflow store)" if MLFLOW_TABLES <= tables else ""
    return UsageError(f"{path} is an SQLite database but not {wanted}{other}; its tables: {shown}. "
                      f"Nothing was written to it.")


def _check_writable(path: Path, what: str) -> None:
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {path}: its folder {folder} is a file, not a directory")
    if not folder.is_dir():
        raise UsageError(f"{what} {path}: its folder {folder} does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: cannot write in {folder} (permission denied); choose a writable "
                         f"place with --tracking-uri sqlite:///PATH")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path} is read-only; make it writable or choose another store")


def _check_sqlite_to_write(uri: str, uri_name: str, what: str, tables_needed: set[str], kind: str) -> None:
    """The form of `uri` (called `uri_name` in errors); for an SQLite file (`what`): a writable
    place, and an existing file that is empty or holds `tables_needed` (else it is another
    program's database: `kind` names what it must be)."""
    check_form(uri, uri_name)
    path = sqlite_path(uri)
    if path is None:
        return
    _check_writable(path, what)
    if path.exists():
        tables = sqlite_tables(path)
        if tables and not tables_needed <= tables:
            raise _kind_error(path, tables, kind)


def check_store_to_write(uri: str) -> None:
    """For commands that log runs: the store may be new, else an MLflow store that can be written."""
    _check_sqlite_to_write(uri, "tracking URI", "MLflow store", MLFLOW_TABLES, "an MLflow store")


def check_store_to_read(uri: str) -> None:
    """For commands that only read runs: the store must exist and be an MLflow store."""
    check_form(uri)
    path = sqlite_path(uri)
    if path is None:
        return
    if not path.is_file():
        raise UsageError(f"no MLflow store at {path} (nothing was created or written). The committed runs "
                         f"are in results/mlruns.db: --tracking-uri sqlite:///results/mlruns.db")
    tables = sqlite_tables(path)
    if not MLFLOW_TABLES <= tables:
        if not tables:
            raise UsageError(f"{path} is an empty SQLite file, not an MLflow store: it holds no runs")
        raise _kind_error(path, tables, "an MLflow store")


def check_storage(url: str) -> None:
    """An Optuna storage URL (`bpsuite tune --storage`): the same forms as a store, and an
    existing SQLite file must be Optuna's, never MLflow's or another program's."""
    if url.startswith(SERVER_SCHEMES):
        raise UsageError(f"Optuna storage '{url}': Optuna needs a database URL, not a server. Accepted: "
                         f"sqlite:///PATH or a postgresql:// / mysql:// URL")
    _check_sqlite_to_write(url, "Optuna storage", "Optuna storage", OPTUNA_TABLES, "an Optuna storage")


def read_only(uri: str) -> str:
    """The same SQLite store opened through SQLite's read-only mode (other URIs unchanged): a
    report cannot write to the store it reads."""
    path = sqlite_path(uri)
    return f"{SQLITE}file:{path}?mode=ro&uri=true" if path is not None else uri


@contextlib.contextmanager
def opening_read_only():
    """While a read-only store is first opened: MLflow makes the parent folders of an SQLite path
    (`_make_parent_dirs_if_sqlite`), and reads `file:/abs/x.db?mode=ro` as a relative path, so it
    would create a folder named `file:` in the working directory. Skipped for such URIs only."""
    try:
        from mlflow.store.db import utils
    except ImportError:
        yield
        return
    original = getattr(utils, "_make_parent_dirs_if_sqlite", None)
    if original is None:
        yield
        return

    def make_parent_dirs(db_uri: str) -> None:
        if not db_uri.startswith(f"{SQLITE}file:"):
            original(db_uri)

    utils._make_parent_dirs_if_sqlite = make_parent_dirs
    try:
        yield
    finally:
        utils._make_parent_dirs_if_sqlite = original


# -- faults while a command runs -------------------------------------------------------------------
_STORE_FAULTS = {
    "database or disk is full": "the disk is full",
    "disk i/o error": "a disk I/O error (a full disk or a file-size limit)",
    "attempt to write a readonly database": "the store is read-only",
    "readonly database": "the store is read-only",
    "unable to open database file": "the store's file cannot be opened",
    "file is not a database": "the store is not an SQLite database",
    "database disk image is malformed": "the store is damaged",
    "database is locked": "the store stayed locked by another process past the retries",
}
_OS_FAULTS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file-size limit was reached",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EDQUOT: "the disk quota is exhausted"}


def store_problem(err: BaseException) -> str | None:
    """What went wrong, in words, when `err` is a storage fault (SQLite's, MLflow's wrapping of
    it, or an OSError of a full or read-only disk); None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, StoreError):
            return str(err)
        if isinstance(err, OSError) and err.errno in _OS_FAULTS:
            return f"{_OS_FAULTS[err.errno]} ({err.filename or err})"
        text = str(err).lower()
        for needle, meaning in _STORE_FAULTS.items():
            if needle in text:
                return meaning
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def removed_if_new(uri: str):
    """A new SQLite store that its first writes fail to set up (a full disk) is removed again,
    so no half-made store stays behind; an existing one is left alone (SQLite rolls a failed
    write back)."""
    path = sqlite_path(uri)
    new = path is not None and not path.exists()
    try:
        yield
    except BaseException as err:
        if new and store_problem(err):
            for leftover in (path, Path(f"{path}-journal"), Path(f"{path}.lock")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        raise
