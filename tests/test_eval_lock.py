"""One evaluation at a time per output folder: a second one stops with one error line naming the first (pid, host,
start time, command) and generates nothing; the lock goes with its holder on every way out, a kill included."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import SHARED_DATA

from curiosft_trl.cli import run_cli
from curiosft_trl.cli.eval import main as eval_main
from curiosft_trl.errors import RecipeError
from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.generation import ENTROPY_BINS, Sample
from curiosft_trl.lock import LOCK_FILE, output_lock
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-eval-data")
    ensure_tiny_data(path)
    return path


def config(model, tiny_data, out, **kw) -> EvalConfig:
    base = dict(model_name_or_paths=[str(model)], benchmarks=["tiny"], tiny_data_dir=str(tiny_data),
                data_dir=str(SHARED_DATA), system_prompt=TINY_SYSTEM_PROMPT, backend="transformers", n_samples=2,
                max_problems=3, output_dir=str(out), grading_workers=1, plots=False)
    return EvalConfig(**{**base, **kw})


class FakeBackend:
    """Samples from the seed; `generate` waits for `go` when given one (an evaluation caught mid-generation)."""

    def __init__(self, go: threading.Event | None = None, started: threading.Event | None = None):
        self.go, self.started, self.calls = go, started, 0

    def generate(self, prompts, seeds, sampling):
        self.calls += 1
        if self.started:
            self.started.set()
        if self.go:
            assert self.go.wait(120)
        return [Sample(f"\\boxed{{{s % 5}}}", 2, "stop", 0.1, [1] + [0] * (len(ENTROPY_BINS) - 2)) for s in seeds]


def hold_lock_in_a_process(out, then: str = "time.sleep(600)") -> subprocess.Popen:
    """A process that takes `out`'s lock as an evaluation does, says `locked`, then runs `then`."""
    script = "\n".join(["import os, subprocess, sys, time",
                        "from curiosft_trl.lock import output_lock",
                        "lock = output_lock(sys.argv[1])",  # kept: a collected context manager releases
                        "fd = lock.__enter__()",
                        "print('locked', flush=True)",
                        textwrap.dedent(then)])
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_evaluation_in_the_same_folder_stops_naming_the_first(tiny_model_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    go, started = threading.Event(), threading.Event()
    first_backend = FakeBackend(go, started)
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(evaluate(config(tiny_model_dir, tiny_data, out),
                                                                   backend_factory=lambda m: first_backend)))
    thread.start()
    try:
        assert started.wait(120)  # the first evaluation holds the lock and is generating
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        second = FakeBackend()
        with pytest.raises(RecipeError) as error:
            evaluate(config(tiny_model_dir, tiny_data, out, temperature=0.0), backend_factory=lambda m: second)
        assert second.calls == 0
        assert str(error.value) == (
            f"output_dir: {out} is in use by another evaluation (pid {os.getpid()} on host {socket.gethostname()}, "
            f"started {holder['started']}, command: {holder['command']}; lock file {out / LOCK_FILE}); wait for it "
            "to finish, or give this one another output_dir.")
    finally:
        go.set()
        thread.join(120)
    assert first["settings"]["temperature"] == 0.6  # the first evaluation's report, untouched by the second
    assert json.loads((out / "results.json").read_text())["settings"]["temperature"] == 0.6
    assert not (out / LOCK_FILE).exists()  # released and removed at the end
    evaluate(config(tiny_model_dir, tiny_data, out), backend_factory=lambda m: pytest.fail("all cached"))


def test_the_cli_says_who_holds_the_folder_in_one_line_and_a_killed_holder_blocks_nothing(tiny_model_dir, tiny_data,
                                                                                         tmp_path, capsys):
    out = tmp_path / "out"
    holder = hold_lock_in_a_process(out)
    try:
        argv = ["--model_name_or_paths", str(tiny_model_dir), "--benchmarks", "tiny", "--tiny_data_dir",
                str(tiny_data), "--backend", "transformers", "--max_problems", "2", "--output_dir", str(out)]
        with pytest.raises(SystemExit) as e:
            run_cli(lambda: eval_main(argv))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1
        assert err[0].startswith(f"error: output_dir: {out} is in use by another evaluation (pid {holder.pid} on host "
                                 f"{socket.gethostname()}, started 20")
        assert f", command: {sys.executable} -c " in err[0] and "wait for it to finish" in err[0]
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no `finally`, the lock file stays behind
        holder.wait()
    assert (out / LOCK_FILE).exists()
    backend = FakeBackend()
    evaluate(config(tiny_model_dir, tiny_data, out), backend_factory=lambda m: backend)
    assert backend.calls == 1 and (out / "results.json").exists() and not (out / LOCK_FILE).exists()


def test_workers_of_a_killed_evaluation_keep_the_folder_locked_until_they_exit(tmp_path):
    out = tmp_path / "out"
    parent = hold_lock_in_a_process(out, then="""
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=(fd,))
        print(worker.pid, flush=True)
        os._exit(0)  # the parent dies without releasing; its worker lives on
    """)
    worker = int(parent.stdout.readline())
    parent.wait()
    held_by_worker = (rf"in use by another evaluation \(pid {parent.pid} on host .*, no longer running: processes "
                      r"it started \(data-parallel workers\) still hold the lock")
    try:
        with pytest.raises(RecipeError, match=held_by_worker), output_lock(out):
            pass
    finally:
        os.kill(worker, signal.SIGKILL)
    for _ in range(100):  # the lock goes when the worker's descriptors are closed, as the kernel ends it
        try:
            with output_lock(out):
                return
        except RecipeError:
            time.sleep(0.1)
    pytest.fail("the lock outlived the last process holding it")


def test_the_lock_is_released_on_an_exception_and_on_ctrl_c(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "out"

    class Interrupted(FakeBackend):
        def generate(self, prompts, seeds, sampling):
            assert (out / LOCK_FILE).exists()  # held while generating
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(config(tiny_model_dir, tiny_data, out), backend_factory=lambda m: Interrupted())
    assert not (out / LOCK_FILE).exists()
    with pytest.raises(ZeroDivisionError), output_lock(out):
        raise ZeroDivisionError
    with output_lock(out) as fd:  # free again
        assert fd is not None and (out / LOCK_FILE).exists()


def test_a_file_system_without_locks_evaluates_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with output_lock(tmp_path / "out") as fd:
        assert fd is None
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith(f"warning: {tmp_path / 'out' / LOCK_FILE}: this file system cannot lock files (No "
                              "locks available); running without the output folder lock")


def test_data_parallel_workers_inherit_the_lock_and_never_wait_for_it(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    from curiosft_trl.evaluation import parallel

    out, inherited = tmp_path / "out", []
    popen = subprocess.Popen

    def recording_popen(args, **kwargs):
        if "curiosft_trl.evaluation.parallel" in args:
            inherited.append([os.readlink(f"/proc/self/fd/{fd}") for fd in kwargs.get("pass_fds", ())])
        return popen(args, **kwargs)

    monkeypatch.setattr(parallel.subprocess, "Popen", recording_popen)
    results = evaluate(config(tiny_model_dir, tiny_data, out, n_samples=1, max_new_tokens=4, data_parallel_size=2))
    assert inherited == [[str(out / LOCK_FILE)]] * 2  # both workers hold the parent's lock; they take none
    assert results["n_samples"] == {"tiny": 1} and not (out / LOCK_FILE).exists()
