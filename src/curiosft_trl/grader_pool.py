"""math-verify in a small persistent pool of worker processes, with a wall-clock deadline per item.

math-verify's own timeouts use `signal.alarm`, which only works in the main thread and cannot interrupt sympy's C-level
big-integer arithmetic (`\\boxed{9^{9^{9^{9}}}}`). So it runs here with its timeouts off, one job at a time per worker;
a worker that misses its deadline is killed and replaced, and the job scores `timed_out`. The pool is one per Python
process, created on first use (`verify_jobs`, `warm_up`) and killed at exit (`shutdown_pool`).

Each worker runs this file as a script in a fresh interpreter: it imports nothing from the package (so no torch), is
not a fork of a process holding CUDA threads, and has neither the cwd nor this folder on `sys.path`.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import wait as wait_readable

_WORKER_BOOT = "import runpy, sys; sys.path.pop(0); runpy.run_path(sys.argv[1], run_name='__main__')"
_WORKER_START_TIMEOUT = 120.0  # importing sympy on a loaded node can take a while; this is not the per-item budget


def _math_verify(gold: str, answer: str) -> bool:
    """math-verify with its signal timeouts off; only ever called inside a `_GraderPool` worker process."""
    from math_verify import parse, verify

    return bool(verify(parse(gold, parsing_timeout=None), parse(answer, parsing_timeout=None), timeout_seconds=None))


def _serve() -> None:
    """Worker loop: one JSON job per line on stdin -> one JSON result per line on the original stdout."""
    import logging
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then kills or reuses us
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _math_verify(r"\boxed{1}", r"\boxed{1}")  # imports and set-up before "ready": deadlines measure grading only

    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        job = json.loads(line)
        # A CPU-time cap per job, so a worker orphaned mid-hang (parent killed) still dies on its own.
        used = int(time.process_time()) + 1
        soft_cap = used + 2 * int(job["timeout"]) + 10
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (soft_cap, resource.getrlimit(resource.RLIMIT_CPU)[1]))
        try:
            result = {"correct": _math_verify(job["gold"], job["answer"]), "error": None}
        except BaseException as e:  # noqa: BLE001  (sympy raises anything, RecursionError included)
            result = {"correct": False, "error": f"math-verify raised {type(e).__name__}"}
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


# ---------------------------------------------------------------------------------------------------- worker pool


def worker_env() -> dict[str, str]:
    """A minimal environment for the grader processes: none of the variables that make Python import extra code
    (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, ... a `sitecustomize.py` on the path) or change its behaviour."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOT, os.path.abspath(__file__)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env())
        self.ready = False
        self.job: int | None = None
        self.deadline = time.monotonic() + _WORKER_START_TIMEOUT

    def send(self, index: int, payload: dict, timeout: float) -> None:
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        self.proc.stdin.flush()
        self.job, self.deadline = index, time.monotonic() + timeout

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class _GraderPool:
    """A fixed number of math-verify worker processes with a per-item wall-clock deadline.

    `run` hands each idle worker one job at a time, so a job's deadline starts when a worker actually takes it;
    a worker past its deadline is killed and replaced (the job scores `timed_out`), and the other workers keep going.
    """

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.owner_pid = os.getpid()  # a forked child must not talk to (or kill) its parent's workers
        self.workers = [_Worker() for _ in range(num_workers)]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def run(self, jobs: Sequence[tuple[str, str]], timeout: float,
            wait_for_start: bool = False) -> list[tuple[bool, bool, str | None]]:
        """`[(gold, answer)] -> [(correct, timed_out, error)]`, in order. Not thread-safe: hold `_POOL_LOCK`."""
        for w in self.workers:
            if w.job is not None:  # still busy with a job from a run that was interrupted (KeyboardInterrupt)
                self._replace(w)
        results: list = [None] * len(jobs)
        pending = collections.deque(range(len(jobs)))
        start_failures = 0
        while pending or any(w.job is not None or (wait_for_start and not w.ready) for w in self.workers):
            for w in self.workers:
                if w.ready and w.job is None and pending:
                    i = pending.popleft()
                    try:
                        w.send(i, {"gold": jobs[i][0], "answer": jobs[i][1], "timeout": timeout}, timeout)
                    except OSError:  # it died while idle: retry the job on its replacement
                        pending.appendleft(i)
                        self._replace(w)
            waiting = [w for w in self.workers if w.job is not None or not w.ready]
            if not waiting:
                continue
            next_deadline = min(w.deadline for w in waiting)
            readable = wait_readable([w.proc.stdout for w in waiting], max(0.0, next_deadline - time.monotonic()))
            now = time.monotonic()
            for w in waiting:
                if w.proc.stdout in readable:
                    line = w.proc.stdout.readline()
                    if not w.ready:
                        if line.strip() == b"ready":
                            w.ready, start_failures = True, 0
                            continue
                        start_failures += 1
                    elif line:
                        reply = json.loads(line)
                        results[w.job] = (bool(reply["correct"]), False, reply["error"])
                        w.job = None
                        continue
                    else:
                        results[w.job] = (False, False, "grader worker crashed")
                elif now < w.deadline:
                    continue
                elif w.ready:
                    results[w.job] = (False, True, None)
                else:
                    start_failures += 1
                self._replace(w)
            if start_failures >= 2 * self.num_workers:  # math-verify cannot even be imported: give up, loudly
                for i in pending:
                    results[i] = (False, False, "grader workers failed to start (see stderr)")
                pending.clear()
                wait_for_start = False
        return results

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = _Worker()


_POOL: _GraderPool | None = None
_POOL_LOCK = threading.RLock()  # guards the pool's creation and every run: concurrent callers take turns


def default_num_workers() -> int:
    """Grader processes used when `num_workers` is not given: `min(cpu count, 8)`."""
    return max(1, min(os.cpu_count() or 1, 8))


def _pool(num_workers: int | None) -> _GraderPool:
    """The process-wide pool, created on first use and resized when a different `num_workers` is asked for."""
    global _POOL
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1 or None, got {num_workers}")
    if _POOL is not None and _POOL.owner_pid != os.getpid():
        _POOL = None  # inherited through fork: those workers are the parent's
    wanted = num_workers or (_POOL.num_workers if _POOL else default_num_workers())
    if _POOL is None or _POOL.num_workers != wanted:
        if _POOL is not None:
            _POOL.close()
        _POOL = _GraderPool(wanted)
    return _POOL


def verify_jobs(jobs: Sequence[tuple[str, str]], timeout: float, num_workers: int | None) -> list:
    """math-verify `[(gold, answer)] -> [(correct, timed_out, error)]` (both LaTeX, gold boxed) in the shared pool."""
    with _POOL_LOCK:
        return _pool(num_workers).run(jobs, timeout)


def warm_up(num_workers: int | None = None) -> None:
    """Start the grader processes now and wait until they are ready (optional: grading starts them lazily).

    Per-item deadlines never include a worker's start-up, but the wall time of the first call, or of a call made
    right after timeouts killed workers, does; an evaluation loop can pay that once, up front, here.
    """
    with _POOL_LOCK:
        _pool(num_workers).run([], 0.0, wait_for_start=True)


def shutdown_pool() -> None:
    """Kill the grader worker processes (they are also killed at interpreter exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.owner_pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown_pool)


if __name__ == "__main__":
    _serve()
