"""The output folder lock: one evaluation, or one training run, at a time writes an `output_dir`.

Two evaluations in one folder would generate the same samples twice (each appending them to the same cache) and
each overwrite the other's results.json; two trainings would interleave their checkpoints and each save a final model
over the other's. So `evaluate` holds an exclusive `flock` on `<output_dir>/eval.lock` from its first write to its
report, and `curiosft-sft`/`curiosft-rl` one on `<output_dir>/training.lock` from before the model loads to the final
save (`curiosft_trl.training.training_lock`); the file names the holder (pid, host, start time, command), and a
second run reads it and stops with one error line.

The kernel (or the NFS server, for a folder on NFS) drops a `flock` when the process holding it dies, however it
dies: an exception, Ctrl-C, SIGKILL, the OOM killer. A lock file left by a killed run is therefore held by nobody and
never blocks the next run. Data-parallel workers inherit the lock's descriptor (`parallel.generate`), so a parent
killed while its workers still generate leaves the folder locked until they exit too: the workers never take the
lock themselves, so they cannot wait on their parent. On a file system without `flock` (some parallel file
systems), the evaluation runs unlocked, with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import RecipeError

LOCK_FILE = "eval.lock"
TRAINING_LOCK_FILE = "training.lock"
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # the file system has no flock


@contextmanager
def output_lock(output_dir: str | Path, lock_file: str = LOCK_FILE, what: str = "evaluation"
                ) -> Iterator[int | None]:
    """Hold `output_dir`'s lock (`lock_file`) for the `with` block, creating the folder; yields the lock file's
    descriptor (for worker processes to inherit), None where the file system has no locks. Raises `RecipeError`
    naming the holder when another `what` holds it; releases it on every way out of the block."""
    path = Path(output_dir) / lock_file
    fd = _acquire(path, what)
    try:
        if fd is not None:
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": shlex.join(sys.orig_argv)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield fd
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # while still held: whoever opened this file finds it gone, and retries
            os.close(fd)


def _acquire(path: Path, what: str) -> int | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RecipeError(f"output_dir: cannot create {path.parent}: {e.strerror}.") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RecipeError(f"output_dir: cannot create the lock file {path}: {e.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RecipeError(f"output_dir: {path.parent} is in use by another {what} ({holder}; lock file "
                              f"{path}); wait for it to finish, or give this one another output_dir.") from None
        except OSError as e:
            os.close(fd)
            if e.errno not in _NO_LOCKS:
                raise
            print(f"warning: {path}: this file system cannot lock files ({e.strerror}); running without the "
                  f"output folder lock: start no other {what} in {path.parent} until this one ends.",
                  file=sys.stderr)
            return None
        with suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # the holder released and removed this file between our open and flock: lock the new one


def _read_holder(fd: int) -> str:
    """Who holds the lock, in words, from the lock file's contents."""
    try:
        holder = json.loads(os.pread(fd, 65536, 0))
        pid, host, started, command = (holder[k] for k in ("pid", "host", "started", "command"))
    except (ValueError, KeyError, TypeError):
        return "which one is not recorded yet"
    gone = ""
    if host == socket.gethostname() and not _alive(pid):
        gone = ", no longer running: processes it started (data-parallel workers) still hold the lock"
    return f"pid {pid} on host {host}{gone}, started {started}, command: {command}".replace("\n", "\\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
