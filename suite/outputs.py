"""Where a command will write, checked before it computes anything: a folder that is a file, a
folder that cannot be created or written, a settings file that is a directory. Each is a
`UsageError` naming the flag and the path; nothing is created by the check."""

from __future__ import annotations

import os
from pathlib import Path

from suite.errors import UsageError


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | Path, flag: str) -> None:
    """`path` is a writable directory, or can be made one (its nearest existing ancestor is a
    writable directory)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory; give a directory")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, so the directory cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {base} (permission denied)")


def check_output_file(path: str | Path, flag: str) -> None:
    """`path` can be written as a file (replaced if it exists): not a directory, in a folder that
    exists or can be created and is writable."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file path")
    check_output_dir(path.parent, f"{flag} {path}: its folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path} is read-only")

