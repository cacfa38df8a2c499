"""Files written whole or not at all: a temporary file beside the target, then one rename.

An interrupted or failed write (Ctrl-C, a full disk, a crash while a figure renders) leaves the
previous file as it was, never half of a new one: `os.replace` is atomic on one file system.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; on success it replaces `path`, on any
    error it is removed and `path` is untouched. The temporary name keeps the suffix, so writers
    that choose a format by suffix (matplotlib's savefig) still see `.png`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: Path, text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)
