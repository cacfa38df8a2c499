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

None of that runs when `bpsuite` itself is SIGKILLed (the OOM killer, `kill -9`, a Slurm job's
hard end): for that, each child asks the kernel to signal it when its parent dies
(`die_with_parent`, Linux's PR_SET_PDEATHSIG; elsewhere nothing does). Per kind of process:

* the pool's fork server (suite/executors.py): SIGKILL when the command dies, armed by its first
  preloaded module (this one, `_arm_fork_server`). Its own way out, the end of its "alive" pipe,
  does not suffice: every worker holds a copy of that pipe, so it waits for them;
* pool workers: SIGKILL when their parent, the fork server, dies;
* the multiprocessing resource tracker: ends by itself (after its clean-up) once every process
  holding its pipe (the command and the processes above) has gone;
* stage and MGRIT workers (suite/methods/layer_parallel/stage_runners.py): SIGKILL when the
  process that trains the cell dies (`dying_with_this_process`);
* MLflow's server and everything it starts, under `bpsuite ui` (suite/cli.py): a watchdog
  (`group_watchdog`) ends their process group when the command is gone; the server also gets
  SIGTERM from the kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

GRACE_S = 5.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# set by suite.executors around the start of the pool's fork server: its parent's pid
FORK_SERVER_PARENT = "BPSUITE_FORK_SERVER_PARENT"
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


@functools.lru_cache(maxsize=1)
def _prctl():
    """libc's prctl(2), or None where there is none (not Linux, or no libc to load)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have the kernel send `sig` to this process when its parent dies, however the parent dies
    (SIGKILL included); call it first thing in a child. Linux only (PR_SET_PDEATHSIG); elsewhere,
    or if prctl fails, it does nothing and returns False.

    `parent`: the parent's pid, recorded by the parent before it forked or spawned this process.
    A parent that died before this call ran is not signalled about (this process was re-parented
    already): then this process exits at once, with status 128 + sig as if the signal had come.
    Without `parent` that case goes unnoticed.

    The setting survives exec (not fork), so it can be made in a `preexec_fn`: see
    `die_with_this_process`, which also loads libc in the parent, before the fork.

    Caveat: "parent" means the parent *thread*: the signal comes when the thread that created this
    process exits, even if the rest of its process runs on. So create such children from the main
    thread or from a thread that outlives them."""
    prctl = _prctl()
    if prctl is None or prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os._exit(128 + int(sig))
    return True


def die_with_this_process(sig: int = signal.SIGKILL):
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when this process dies (see
    `die_with_parent`; libc is loaded now, not in the forked child). None where there is no
    prctl, which Popen takes as no preexec_fn (Windows refuses any)."""
    if _prctl() is None:
        return None
    return functools.partial(die_with_parent, sig, os.getpid())


class _DieWithParent:
    """The first argument of a child's target (`dying_with_this_process`): its unpickling in a
    spawned child calls `die_with_parent`."""

    def __init__(self, sig: int, parent: int):
        self.sig, self.parent = sig, parent

    def __reduce__(self):
        return die_with_parent, (self.sig, self.parent)


def _call_dying_with_parent(armed, target, *args):
    if isinstance(armed, _DieWithParent):  # not pickled (the fork start method): arm it now
        die_with_parent(armed.sig, armed.parent)
    return target(*args)


def dying_with_this_process(target, args: tuple, sig: int = signal.SIGKILL) -> tuple:
    """(target, args) for a multiprocessing Process whose process gets `sig` when this one dies
    (`die_with_parent`): `Process(target=t, args=a, ...)` with `t, a = dying_with_this_process(...)`.

    Armed as early as can be: a spawned child unpickles its target (this module's, quick to import)
    and then its arguments in order, the first of which calls `die_with_parent` as it is unpickled,
    before the imports that the target and the other arguments need (torch: seconds). Armed later,
    e.g. first thing in the target, a child whose parent is killed while it starts would go on
    importing for those seconds, and only then see that its parent is gone."""
    return _call_dying_with_parent, (_DieWithParent(sig, os.getpid()), target, *args)


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


def parent_of(pid: int) -> int | None:
    """`pid`'s parent pid, from /proc; None if it is gone or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[1])


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


def _group_alive(pgid: int) -> bool:
    """Whether process group `pgid` has a live (non-zombie) member."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def end_process_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM every member of process group `pgid`, wait up to `grace_s` for them to end,
    SIGKILL what is left. Works after the group's leader has gone (its members are still found)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        deadline = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_alive(pgid):
            return


def group_watchdog(pgid: int, grace_s: float = GRACE_S) -> subprocess.Popen | None:
    """Start a watchdog that ends process group `pgid` (`end_process_group`) as soon as this
    process is gone, however it went (SIGKILL included): it waits for end-of-file on a pipe whose
    only write end this process holds. Portable, and it reaches the whole group, also the
    grandchildren that a signal to the group's leader would leave orphaned.

    The watchdog runs in its own session, so that a signal to this process's group (Ctrl-C, a
    hang-up, `kill -- -PGID`) leaves it to do its job; SIGTERM makes it end the group at once.
    Start it after the group's leader (so the leader does not inherit the pipe); stop it with
    `.kill()` once the group has been ended, so it never signals a group id the system reused.
    None where there are no process groups (Windows)."""
    if not hasattr(os, "killpg"):
        return None
    return subprocess.Popen([sys.executable, "-m", "suite.shutdown", "end-group-on-eof", str(pgid), str(grace_s)],
                            stdin=subprocess.PIPE, start_new_session=True)


def _watchdog_main(pgid: int, grace_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while os.read(0, 4096):
            pass
    except (KeyboardInterrupt, OSError):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's end is under way: finish it
    end_process_group(pgid, grace_s)


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


def _arm_fork_server() -> None:
    """In the pool's fork server, which imports this module first (suite.executors'
    `_start_fork_server`): SIGKILL when the command dies. Elsewhere the variable is not set.
    A command that died before this ran makes the fork server exit here, before it forks any
    worker."""
    parent = os.environ.pop(FORK_SERVER_PARENT, None)
    if parent and parent.isdigit():
        die_with_parent(signal.SIGKILL, int(parent))


_arm_fork_server()


if __name__ == "__main__":  # the watchdog started by `group_watchdog`
    if len(sys.argv) != 4 or sys.argv[1] != "end-group-on-eof":
        sys.exit("usage: python -m suite.shutdown end-group-on-eof PGID GRACE_S")
    _watchdog_main(int(sys.argv[2]), float(sys.argv[3]))
