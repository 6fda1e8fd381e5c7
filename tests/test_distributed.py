"""The loss is the same whatever the layout of the global batch: 1 process, 2 processes (gloo), gradient
accumulation, DeepSpeed ZeRO-2 (TRL's normalisation: divide by all loss tokens, scale by the process count)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = str(Path(__file__).parent / "scripts" / "train_tiny.py")
ZERO2 = {"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "auto",
         "gradient_accumulation_steps": "auto", "train_batch_size": "auto", "gradient_clipping": "auto"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def own_extensions_dir(tmp_path_factory):
    """This module's own torch extensions folder. DeepSpeed JIT-builds its CPU shared-memory op there under a file
    lock; a build killed mid-way elsewhere (~/.cache/torch_extensions) leaves the lock behind, and every later
    ZeRO run then waits on it forever. Costs one ~30 s build per test session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.mktemp("torch_extensions")))
        yield


def train(tmp_path, name, model_dir, data_file, batch, processes=1, **overrides) -> list[dict]:
    out = tmp_path / name
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={free_port()}"]
    extra = [x for k, v in overrides.items() for x in (f"--{k}", json.dumps(v))]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    # A session of its own, so that a timeout kills the workers too and not only the launcher
    with subprocess.Popen([*launcher, WORKER, str(model_dir), str(data_file), str(out), str(batch), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"{name}: no result after 300 s; its stderr ends:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model_dir, tiny_sft_file):
    return train(tmp_path_factory.mktemp("single"), "single", tiny_model_dir, tiny_sft_file, batch=8)


def assert_same_run(a: list[dict], b: list[dict]):
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "nll", "distill", "tau/mean", "num_tokens"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), key


def test_two_processes_match_one(single, tmp_path, tiny_model_dir, tiny_sft_file):
    assert_same_run(single, train(tmp_path, "ddp", tiny_model_dir, tiny_sft_file, batch=4, processes=2))


def test_gradient_accumulation_matches_one_batch(single, tmp_path, tiny_model_dir, tiny_sft_file):
    accumulated = train(tmp_path, "accum", tiny_model_dir, tiny_sft_file, batch=4, gradient_accumulation_steps=2)
    for x, y in zip(single, accumulated, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)


def test_deepspeed_zero2_two_processes_match_one(single, tmp_path, tiny_model_dir, tiny_sft_file):
    zero2 = train(tmp_path, "zero2", tiny_model_dir, tiny_sft_file, batch=4, processes=2, deepspeed=ZERO2)
    assert_same_run(single, zero2)
