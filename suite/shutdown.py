"""Every process a command starts ends with it: when `bpsuite` is terminated (SIGTERM from a
process manager or the end of a Slurm job, SIGHUP, SIGINT) or fails, its descendants go too.

Why not rely on the defaults: SIGTERM's default action kills only the process it is sent to, so
pool workers, the multiprocessing fork server (whose children the pool workers are), the stage and
MGRIT workers and MLflow's server would be left running, orphaned. Python's own clean-up does not
help either: `ProcessPoolExecutor.__exit__` waits for the running cells to finish first.

So `ending_children()` turns those signals into a KeyboardInterrupt in the main thread (a clean
exit: the harness marks an interrupted run `killed`, finally blocks run), and on every
abnormal exit ends all descendants: it takes a snapshot of the whole process tree first (so a
child whose parent dies first is not lost by being re-parented), sends SIGTERM, waits a grace
period, then SIGKILLs what is left. The tree is read from /proc (Linux); elsewhere only the direct
children known to the caller are ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

GRACE_S = 5.0
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # the command name (field 2) is in parentheses and may contain spaces: split after it
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(entry.name)] = int(fields[1])
    return out


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of `pid` (default: this process), children first."""
    root = os.getpid() if pid is None else pid
    if not Path("/proc").is_dir():
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(root, []))
    while todo:
        p = todo.pop(0)
        found.append(p)
        todo += children.get(p, [])
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie counts as ended: reaping is left to its parent, e.g. multiprocessing's
    own bookkeeping, which a stray waitpid here would confuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended; it only waits for its parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def end_processes(pids: list[int], grace_s: float = GRACE_S) -> None:
    """SIGTERM each pid, wait up to `grace_s` for all to end, SIGKILL those still there."""
    for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while True:
            pids = [p for p in pids if _alive(p)]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not pids:
            return


def _is_resource_tracker(pid: int) -> bool:
    try:
        return b"multiprocessing.resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def end_descendants(grace_s: float = GRACE_S) -> None:
    """End every descendant of this process (snapshot first, then SIGTERM, then SIGKILL). The
    multiprocessing resource tracker is spared: it ends by itself once every process using it has
    gone, after removing the shared-memory segments and semaphores they leave (killing it would
    leak them, and make this process start a new one)."""
    end_processes([p for p in descendants() if not _is_resource_tracker(p)], grace_s)


def end_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End a child started with `start_new_session=True` together with its whole process group,
    including grandchildren its own exit would orphan."""
    pids = [proc.pid, *descendants(proc.pid)]
    if proc.poll() is None and hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    end_processes(pids, grace_s)
    if hasattr(os, "killpg"):  # anything the group forked meanwhile
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)


_received: list[int] = []  # the signals that ended the command, in order


def received_signal() -> int | None:
    """The first signal that ended the command, or None: the caller exits with 128 + it."""
    return _received[0] if _received else None


def _on_signal(signum, frame):
    _received.append(signum)
    end_descendants()  # first: an executor's clean-up would otherwise wait for running cells
    # KeyboardInterrupt for every signal: the harness logs a run it interrupts as `killed`, and
    # finally blocks and context managers run on the way out
    raise KeyboardInterrupt


@contextlib.contextmanager
def ending_children():
    """Run a command so that its descendants end when it is terminated, interrupted or fails.
    Signal handlers are installed only in the main thread, and restored on exit."""
    installed = {}
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            installed[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    except BaseException:
        end_descendants()
        raise
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)
