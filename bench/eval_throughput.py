"""Evaluation throughput on the tiny model: generated tokens/s of vLLM(-CPU) vs transformers, and grading items/s.

Both backends generate the same requests (tiny-task test prompts x 8 samples, temperature 0.6, per-sample seeds,
up to 512 new tokens: the tiny eval recipe's protocol) after a warm-up call; the ratio is vLLM's tokens/s over
transformers'. The model is the tiny SFT checkpoint (`outputs/tiny/sft-curiosft`, whose completions stop at EOS
with varied lengths, as in a real evaluation), else the cached tiny base. Grading runs the shared grader
(`grade_many`) on a mix of boxed-correct, boxed-wrong and unboxed completions.

Usage: python bench/eval_throughput.py [--model DIR] [--prompts N] [--max-new-tokens N] [--dtype D] [--json]
(vLLM must be installed). vLLM runs eagerly on the CPU and with CUDA graphs on a GPU, as the evaluation does
(`EvalConfig.enforce_eager`). `--json` ends the output with one JSON line of the numbers (the GPU check reads it).
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from curiosft_trl import grading  # noqa: E402
from curiosft_trl.evaluation.benchmarks import BENCHMARKS, load_benchmark  # noqa: E402
from curiosft_trl.evaluation.generation import SamplingConfig, build_backend  # noqa: E402
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT, ensure_tiny_base, ensure_tiny_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, MAX_NEW_TOKENS = 8, 512


def generation_throughput(backend_name: str, model: str, prompts: list[str], seeds: list[int],
                          max_new_tokens: int, dtype: str) -> float:
    """Generated tokens per second of one backend (load and warm-up excluded)."""
    import torch

    backend = build_backend(backend_name, model, seed=0, dtype=dtype, enforce_eager=not torch.cuda.is_available(),
                            batch_size=64)
    sampling = SamplingConfig(temperature=0.6, max_new_tokens=max_new_tokens)
    backend.generate(prompts[:2], seeds[:2], sampling)
    start = time.perf_counter()
    samples = backend.generate(prompts, seeds, sampling)
    return sum(s.num_tokens for s in samples) / (time.perf_counter() - start)


def grading_throughput(n: int = 2000) -> float:
    """Graded completions per second through `grade_many` (worker start-up excluded)."""
    grading.warm_up()
    preds = [(f"... </think> so \\boxed{{{i}}}", "wrong \\boxed{\\frac{1}{3}}", f"the answer is {i}")[i % 3]
             for i in range(n)]
    start = time.perf_counter()
    grading.grade_many(preds, [str(i) for i in range(n)], kind="math")
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: outputs/tiny/sft-curiosft, else the tiny base")
    parser.add_argument("--prompts", type=int, default=200, help="tiny test problems (200: the whole split)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                        help="per sample (the tiny eval recipe: 512); bounds a larger model's run")
    parser.add_argument("--dtype", default="float32", help="both backends' weights (bfloat16 on a GPU)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the numbers")
    opts = parser.parse_args()
    sft, base = ROOT / "outputs/tiny/sft-curiosft", ROOT / "outputs/tiny/base"  # `make sft`'s, `make tiny`'s
    model = opts.model or str(sft if (sft / "config.json").is_file() else ensure_tiny_base(base))
    with tempfile.TemporaryDirectory() as tmp:
        ensure_tiny_data(os.path.join(tmp, "data"))
        rows, _ = load_benchmark(BENCHMARKS["tiny"], os.path.join(tmp, "data"), TINY_SYSTEM_PROMPT, opts.prompts)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        prompts = [tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
                   for r in rows for _ in range(SAMPLES)]
        seeds = list(range(len(prompts)))
        hf = generation_throughput("transformers", model, prompts, seeds, opts.max_new_tokens, opts.dtype)
        vl = generation_throughput("vllm", model, prompts, seeds, opts.max_new_tokens, opts.dtype)
    graded = grading_throughput()
    print(f"# Evaluation, {model}: {len(prompts)} samples, up to {opts.max_new_tokens} new tokens, {opts.dtype}")
    print(f"eval generation: "
          f"vllm {vl:.0f} tok/s, transformers {hf:.0f} tok/s, ratio vllm/transformers {vl / hf:.2f}x")
    print(f"grading: {graded:.0f} completions/s ({grading.default_num_workers()} workers)")
    if opts.json:
        print(json.dumps({"model": model, "samples": len(prompts), "max_new_tokens": opts.max_new_tokens,
                          "dtype": opts.dtype, "vllm_tokens_per_s": vl, "transformers_tokens_per_s": hf,
                          "vllm_over_transformers": vl / hf, "graded_per_s": graded}))


if __name__ == "__main__":
    main()
