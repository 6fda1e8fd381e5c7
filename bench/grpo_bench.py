"""`make bench`, RL part: GRPO step time on the tiny default, and reward-grading throughput (single process vs pool).

1. GRPO step time: `recipes/tiny/grpo.yaml` (transformers generation, 8 prompts x 8 samples per rollout batch,
   2 optimizer steps per rollout) for a few steps from the tiny SFT checkpoint (`outputs/tiny/sft-curiosft`, else
   the cached tiny base). A step's time includes its share of the rollout: generation, grading and the update.
2. Grading throughput: graded answers per second of `curiosft_trl.grading.grade_many` on MATH-500 golds, with one
   math-verify worker process vs a pool of two. Two thirds of the predictions are another row's gold (wrong, and
   not string-equal, so math-verify runs), one third the exact gold (decided by the string pre-check).

Usage: python bench/grpo_bench.py [--model DIR] [--steps N] [--answers N]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from curiosft_trl.cli.rl import parse_args
from curiosft_trl.rl.rewards import resolve_reward_funcs
from curiosft_trl.grading import grade_many, shutdown_pool, warm_up
from curiosft_trl.rl.data import load_rl_dataset
from curiosft_trl.tiny import ensure_tiny_base, ensure_tiny_data

ROOT = Path(__file__).resolve().parents[1]
MATH500 = ROOT.parent / "shared" / "data" / "math500.jsonl"


def grpo_step_time(model: str, steps: int) -> dict:
    """Mean seconds per optimizer step of the tiny GRPO recipe, over whole rollout cycles after the first."""
    from curiosft_trl.rl.trainer import CurioGRPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        data = ensure_tiny_data(f"{tmp}/data")["rl_train"]
        script_args, args, _ = parse_args([
            "--config", str(ROOT / "recipes/tiny/grpo.yaml"), "--model_name_or_path", model,
            "--output_dir", f"{tmp}/out", "--max_steps", str(steps), "--save_strategy", "no",
            "--logging_steps", "1", "--disable_tqdm", "true", "--use_cpu", str(not torch.cuda.is_available()),
        ])
        trainer = CurioGRPOTrainer(
            model=model, reward_funcs=resolve_reward_funcs(script_args.reward_funcs), args=args,
            train_dataset=load_rl_dataset(str(data), system_prompt=script_args.system_prompt),
        )
        trainer.train()
    cycle = args.steps_per_generation // args.gradient_accumulation_steps  # optimizer steps per rollout batch
    # TRL's `step_time`, logged per optimizer step: its `training_step`, where GRPO generates, grades and updates
    times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    steady = times[cycle:] or times  # the first cycle warms up
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_s": sum(steady) / len(steady), "steps": len(steady), "completions_per_step":
            args.per_device_train_batch_size * args.gradient_accumulation_steps,
            "mean_completion_length": sum(lengths) / max(len(lengths), 1)}


def grading_throughput(n: int, num_workers: int, repeats: int = 2) -> float:
    """Graded answers per second of `grade_many` with `num_workers` math-verify processes (pool started first)."""
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()[:n]]
    golds = [r["answer"] for r in rows]
    predictions = [f"\\boxed{{{golds[i] if i % 3 == 0 else golds[(i + 1) % n]}}}" for i in range(n)]
    warm_up(num_workers)
    start = time.perf_counter()
    for _ in range(repeats):
        grade_many(predictions, golds, kind="math", num_workers=num_workers)
    elapsed = time.perf_counter() - start
    shutdown_pool()
    return repeats * n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="default: outputs/tiny/sft-curiosft, else the tiny base")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--answers", type=int, default=200)
    opts = parser.parse_args()
    sft, base = ROOT / "outputs/tiny/sft-curiosft", ROOT / "outputs/tiny/base"  # `make sft`'s, `make tiny`'s
    model = opts.model or str(sft if (sft / "config.json").is_file() else ensure_tiny_base(base))
    device = "cuda" if torch.cuda.is_available() else "cpu"

    grpo = grpo_step_time(model, opts.steps)
    print(f"# GRPO, tiny default ({device}, transformers generation; model {model})")
    print(f"GRPO step time   {grpo['step_s']:.2f} s/optimizer step   ({grpo['completions_per_step']} completions "
          f"per step, mean length {grpo['mean_completion_length']:.0f} tokens, {grpo['steps']} steady steps)")

    single, pool = grading_throughput(opts.answers, 1), grading_throughput(opts.answers, 2)
    print(f"# Reward grading, {opts.answers} MATH-500 answers (2/3 wrong: math-verify runs)")
    print(f"graded answers/s   1 worker {single:.0f}   pool of 2 {pool:.0f}   speed-up {pool / single:.2f}x")


if __name__ == "__main__":
    main()
