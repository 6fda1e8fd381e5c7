"""The evaluation harness: checkpoints x benchmarks -> cached samples -> grades -> metrics -> report.

`evaluate(EvalConfig(...))` is the library entry point behind `curiosft-eval` / `make eval`:

1. resolve the benchmarks and check the output folder, every model and data file before anything is generated;
   then lock the output folder for the rest of the run (`lock.py`: a second evaluation there stops, naming this one);
2. per model, render each problem with the model's chat template (system prompt from the recipe) and generate the
   samples the cache lacks, every benchmark's in one stream, one request per (problem, sample index) with its own
   seed `sample_seed(seed, benchmark, problem id, index)`, appending each chunk to the cache (`cache.py`), or in one
   worker process per model replica with `data_parallel_size > 1`, with the results of one process (`parallel.py`);
3. grade every sample with the one grader shared with the RL rewards (`curiosft_trl.grading`), in its process
   pool with a per-item time limit; the graded region is the text after the last `</think>` when there is one,
   else the whole completion (`require_think=True`: the RL reward's rule, no `</think>` scores 0);
4. compute the metrics from the per-sample correctness matrix (`metrics.py`) and write the report (`report.py`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import grading
from ..errors import RecipeError, check_output_dir
from ..files import atomic_write_text, json_line, model_key, short_hash
from ..gguf_import import gguf_source
from ..lock import output_lock
from . import parallel, report
from .benchmarks import Benchmark, load_benchmark, resolve_benchmarks
from .cache import GenerationCache, Job, generate_missing, progress
from .config import EvalConfig
from .generation import build_backend
from .metrics import benchmark_metrics, group_averages, pass_at_k
from .reference import reference_numbers

__all__ = ["EvalConfig", "evaluate", "samples_file", "samples_folder"]
TINY_HINT = " Run `make sft` (and `make rl` for outputs/tiny/grpo) to build the tiny default's checkpoints."


def sample_seed(seed: int, benchmark: str, problem_id: str, index: int) -> int:
    """The seed of one sample, a function of its identity only (so resuming or reordering changes nothing)."""
    digest = hashlib.sha256(f"{seed}|{benchmark}|{problem_id}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def samples_folder(model: str) -> str:
    """The folder under `samples/` that holds one model's per-sample records: a readable name plus a hash of the
    full path, so two models whose paths differ only where the readable part drops characters (non-ASCII letters,
    spaces) never share one."""
    return f"{_readable(model)[-60:]}-{short_hash(model)[:8]}"


def samples_file(eval_dir: str | Path, model: str, benchmark: str) -> Path:
    """`eval_dir/samples/<samples_folder(model)>/<benchmark>.jsonl`, or where an evaluation written before the hash
    put it (the readable name alone) when only that one exists."""
    current = Path(eval_dir) / "samples" / samples_folder(model) / f"{benchmark}.jsonl"
    earlier = Path(eval_dir) / "samples" / _readable(model) / f"{benchmark}.jsonl"
    return earlier if not current.exists() and earlier.exists() else current


def _readable(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")


def present_models(models: list[str]) -> list[str]:
    """`models` without the local folders that do not exist yet (each named once); an error if none is left. Hub ids
    and folders that exist pass through, to be checked like any other."""
    if missing := [m for m in models if _local(m) and not Path(m).expanduser().exists()]:
        print(f"skip_missing: not evaluating {', '.join(missing)} (not there yet)")
    present = [m for m in models if m not in missing]
    if not present:
        hint = TINY_HINT if any("tiny" in m for m in missing) else ""
        raise RecipeError(f"model_name_or_paths: none of {', '.join(missing)} exists.{hint}")
    return present


def _local(model: str) -> bool:
    return model.startswith((".", "/", "~", "outputs")) or Path(model).expanduser().exists()


def check_model(model: str) -> None:
    """Fail before any generation if `model` is a directory without weights or not a loadable model at all."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise RecipeError(f"model_name_or_paths: {path} has no weights (*.safetensors or *.bin).")
        if not (path / "config.json").is_file():
            raise RecipeError(f"model_name_or_paths: {path} has no config.json.")
    elif _local(model):
        hint = TINY_HINT if "tiny" in model else ""
        raise RecipeError(f"model_name_or_paths: {model} is not a model directory.{hint}")


def _graded_region(text: str, require_think: bool) -> str:
    after = None if require_think else grading.answer_after_think(text)  # with require_think grade_many applies it
    return text if after is None else after


@dataclass
class Plan:
    """One model on one benchmark: its cache and its jobs (every sample of every problem), in row order."""

    benchmark: Benchmark
    cache: GenerationCache
    jobs: list[Job]
    n: int

    def missing(self) -> list[Job]:
        return [j for j in self.jobs if self.cache.get(j.problem_id, j.sample_index, j.prompt) is None]


def plan_benchmark(config: EvalConfig, model: str, tokenizer, benchmark: Benchmark, rows: list[dict]) -> Plan:
    """Render `rows` (`load_benchmark`) with the model's chat template and open the cache of their samples (folding
    in what a killed data-parallel run left in part files)."""
    n = config.n_for(benchmark)
    settings = {"backend": config.backend, "dtype": config.dtype, "seed": config.seed, **asdict(config.sampling())}
    cache = GenerationCache(Path(config.output_dir) / "cache" / model_key(model)
                            / f"{benchmark.name}-{short_hash(settings)}.jsonl")
    cache.merge_parts()
    prompts = [tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True) for r in rows]
    jobs = [Job(r["id"], i, sample_seed(config.seed, benchmark.name, r["id"], i), p)
            for r, p in zip(rows, prompts) for i in range(n)]
    return Plan(benchmark, cache, jobs, n)


def score_benchmark(config: EvalConfig, plan: Plan, rows: list[dict]) -> tuple[dict, list[dict], list[int]]:
    """Grade and score one model on one benchmark whose samples are all in `plan.cache`: its metrics, per-sample
    records and token-entropy histogram."""
    benchmark, cache, jobs, n = plan.benchmark, plan.cache, plan.jobs, plan.n
    samples = [cache.get(j.problem_id, j.sample_index, j.prompt) for j in jobs]
    golds = [r["gold"] for r in rows for _ in range(n)]
    num_choices = [r["num_choices"] for r in rows for _ in range(n)]
    regions = [_graded_region(s.text, config.require_think) for s in samples]
    grades = []
    with progress(len(samples), f"{benchmark.name}: grade") as bar:
        for start in range(0, len(samples), 256):  # in parts, for the progress bar
            part = slice(start, start + 256)
            grades += grading.grade_many(regions[part], golds[part], kind=benchmark.kind,
                                         require_think=config.require_think, timeout=config.grading_timeout,
                                         num_workers=config.grading_workers, num_choices=num_choices[part])
            bar.update(len(golds[part]))

    def matrix(values, dtype=None) -> np.ndarray:
        """`(P, n)`: one value per sample, in job order."""
        return np.array(values, dtype=dtype).reshape(len(rows), n)

    correct = matrix([g.correct for g in grades])
    metrics = benchmark_metrics(correct, matrix([g.extracted for g in grades], object).tolist(),
                                matrix([s.num_tokens for s in samples]), matrix([s.truncated for s in samples]),
                                matrix([s.entropy_sum for s in samples]))
    for k in config.pass_k or []:
        metrics[f"pass@{k}"] = pass_at_k(correct, k)
    metrics["grading_timeouts"] = sum(g.timed_out for g in grades)
    metrics["grading_errors"] = sum(g.error is not None for g in grades)
    records = [{"problem_id": j.problem_id, "sample_index": j.sample_index, "seed": j.seed, "gold": gold,
                "prompt": j.prompt, "completion": s.text, "extracted": g.extracted, "correct": g.correct,
                "num_tokens": s.num_tokens, "finish_reason": s.finish_reason, "timed_out": g.timed_out,
                "grading_error": g.error} for j, gold, s, g in zip(jobs, golds, samples, grades)]
    return metrics, records, np.sum([s.entropy_hist for s in samples], axis=0).tolist()


def evaluate(config: EvalConfig, backend_factory=None) -> dict:
    """Run the whole evaluation and write the report; returns the results dict written to results.json.

    `backend_factory(model) -> backend` replaces `build_backend` in this process (tests use it to interrupt a run);
    worker processes (`data_parallel_size > 1`) always build their own. Raises `RecipeError` for a bad config,
    model or output folder, or one that another evaluation is using, before anything is generated."""
    if not config.model_name_or_paths:
        raise RecipeError("model_name_or_paths: give at least one checkpoint.")
    if config.skip_missing:
        config = replace(config, model_name_or_paths=present_models(config.model_name_or_paths))
    check_output_dir(config.output_dir,
                     "the cache, samples and report (a new path, or the folder of an evaluation to resume)")
    if backend_factory is not None and config.data_parallel_size > 1:
        raise ValueError("backend_factory runs in this process only: use it with data_parallel_size 1.")
    # enough GPUs for every replica, checked before anything is loaded
    replica_envs = parallel.replica_environments(config.data_parallel_size, config.tensor_parallel_size) \
        if config.data_parallel_size > 1 else None
    benchmarks = resolve_benchmarks(config.benchmarks, config.benchmark_files)
    for model in config.model_name_or_paths:
        check_model(model)
    data = {}  # benchmark name -> (rows, source), each loaded once
    for b in benchmarks:  # every data file, n and k is checked before the first (slow) generation
        n = config.n_for(b)
        if bad := [k for k in config.pass_k or [] if not 1 <= k <= n]:
            raise RecipeError(f"pass_k: k={bad[0]} is not in 1..n for {b.name}, which has n_samples={n}.")
        data[b.name] = load_benchmark(b, config.data_dir_for(b), config.system_prompt, config.max_problems)
    with output_lock(config.output_dir) as lock_fd:
        grading.warm_up(config.grading_workers)
        return _evaluate_models(config, benchmarks, data, replica_envs, backend_factory, lock_fd)


def _evaluate_models(config: EvalConfig, benchmarks: list[Benchmark], data: dict, replica_envs, backend_factory,
                     lock_fd: int | None) -> dict:
    """`evaluate` once everything is checked and the output folder locked: generate, grade, report."""
    results = {"models": {}, "data": {}, "settings": asdict(config), "n_samples": {}}
    hists, out, groups = {}, Path(config.output_dir), {b.name: b.group for b in benchmarks}
    for model in config.model_name_or_paths:
        # Imported here: transformers takes seconds to import, which a bad config should not wait for
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise RecipeError(f"model_name_or_paths: cannot load the tokenizer of {model}: {str(e).splitlines()[0]}")
        plans = [plan_benchmark(config, model, tokenizer, b, data[b.name][0]) for b in benchmarks]
        work = [(p.cache, j) for p in plans for j in p.missing()]
        if work:
            t0 = time.time()
            if config.data_parallel_size > 1:
                parallel.generate(config, model, work, replica_envs, keep_fds=() if lock_fd is None else (lock_fd,))
            else:
                backend = backend_factory(model) if backend_factory else build_backend(
                    config.backend, model, **config.backend_kwargs())
                print(f"{model}: {config.backend} backend ready in {time.time() - t0:.0f}s")
                generate_missing(backend, work, config.sampling(), config.generation_chunk_size(), f"{model}: generate")
                del backend
            print(f"{model}: {len(work)} samples generated in {time.time() - t0:.0f}s")
        per_bench = {}
        for plan in plans:
            b = plan.benchmark
            t0 = time.time()
            if plan.missing():  # a worker or the backend skipped a sample: never score a partial matrix
                raise RuntimeError(f"{model} {b.name}: {len(plan.missing())} samples are missing after generation.")
            per_bench[b.name], records, hists[(model, b.name)] = score_benchmark(config, plan, data[b.name][0])
            results["data"][b.name], results["n_samples"][b.name] = data[b.name][1], plan.n
            atomic_write_text(out / "samples" / samples_folder(model) / f"{b.name}.jsonl",
                              "".join(map(json_line, records)))
            avg = per_bench[b.name][f"avg@{plan.n}"]
            print(f"{model} {b.name}: avg@{plan.n} {100 * avg:.1f}%  (graded in {time.time() - t0:.0f}s)")
        results["models"][model] = {"cache_key": model_key(model), "benchmarks": per_bench,
                                    "averages": group_averages(per_bench, groups), "gguf_source": gguf_source(model)}
    if config.compare_to:
        results["reference"] = reference_numbers(config.compare_to, config.compare_models,
                                                 config.model_name_or_paths)
    results["versions"] = report.package_versions()
    report.write_report(results, hists, out, plots=config.plots, groups=groups)
    return results
