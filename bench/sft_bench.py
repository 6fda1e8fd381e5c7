"""`make bench`: CurioSFT's cost against vanilla TRL SFT, measured side by side in one run and printed as ratios.

1. SFT step time and peak memory, `sft_loss: curiosft` vs `sft_loss: nll`, at real models' shapes with random
   weights: Qwen2.5-0.5B (vocabulary 151,936, batch 1 x 512 tokens), SmolLM2-135M (49,152, batch 4 x 512) and a
   shallow 4-layer model under Qwen2.5's vocabulary (the worst case: the LM head dominates), gradient checkpointing.
   Each arm runs in its own process (`bench/sft_step.py`: its peak memory is its own); arms alternate
   (nll, curiosft, nll, curiosft, ...) over `--repeats` rounds, so a slow spell of the machine hits both. A round's
   ratio is the median of its CurioSFT steady steps over the median of its vanilla ones; printed: the median ratio
   and its range over rounds. Targets (issue 13): time <= 1.25x; peak memory <= vanilla + teacher weights + 10%.
2. Temperature selection alone: `entropy_guided_temperature` per token on full-vocabulary logits, with the Newton
   and the bisection solver, each next to one `log_softmax` over the same logits (the unit of cost of any LM loss),
   interleaved over rounds: medians and the range across rounds. `--temperature` runs this part only.

`--quick`: one round of a tiny shape, 2 + 2 steps: a smoke test (tests/test_bench.py), not a measurement.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from curiosft_trl.sft.losses import entropy_guided_temperature

HERE = Path(__file__).resolve().parent
VOCAB = 151_936
WARMUP_STEPS = 2  # sft_step.py times from its third step on

# (arch, per-device batch, sequence length, steady steps per process)
SHAPES = [("qwen2.5-0.5b", 1, 512, 5), ("smollm2-135m", 4, 512, 5), ("shallow", 2, 512, 5)]
QUICK_SHAPES = [("tiny", 2, 128, 2)]


def run_arm(sft_loss: str, arch: str, batch: int, seq_len: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "sft_step.py"), sft_loss, "--arch", arch, "--batch", str(batch),
                          "--seq-len", str(seq_len), "--steps", str(steps + WARMUP_STEPS)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_bench(arch: str, batch: int, seq_len: int, steps: int, repeats: int) -> dict:
    """Alternating nll / curiosft processes; per round the ratio of median steady step times."""
    rounds = []
    for _ in range(repeats):
        rounds.append({arm: run_arm(arm, arch, batch, seq_len, steps) for arm in ("nll", "curiosft")})
    ratios = [statistics.median(r["curiosft"]["steady_step_s"]) / statistics.median(r["nll"]["steady_step_s"])
              for r in rounds]
    step = {arm: statistics.median(t for r in rounds for t in r[arm]["steady_step_s"]) for arm in ("nll", "curiosft")}
    peak = {arm: max(r[arm]["peak_bytes"] for r in rounds) for arm in ("nll", "curiosft")}
    teacher = rounds[0]["curiosft"]["model_bytes"]
    return {"arch": arch, "batch": batch, "seq_len": seq_len, "steps": steps, "repeats": repeats, "memory": rounds[0]["nll"]["memory"],
            "step_s": step, "ratio_median": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "peak_bytes": peak, "teacher_bytes": teacher,
            "memory_ratio": peak["curiosft"] / (peak["nll"] + teacher)}


def time_per_token(fn, logits: torch.Tensor, repeats: int = 3) -> float:
    fn(logits)  # warm-up
    if logits.is_cuda:
        torch.cuda.synchronize()  # the warm-up's queued kernels are not part of the timing
    start = time.perf_counter()
    for _ in range(repeats):
        fn(logits)
    if logits.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / logits.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="CurioSFT vs vanilla TRL SFT: step time, memory, temperature")
    parser.add_argument("--quick", action="store_true", help="a smoke test at a tiny shape")
    parser.add_argument("--temperature", action="store_true", help="the temperature micro-benchmark only")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of alternating arms per shape")
    opts = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not opts.temperature:
        for arch, batch, seq_len, steps in QUICK_SHAPES if opts.quick else SHAPES:
            r = step_bench(arch, batch, seq_len, steps, 1 if opts.quick else opts.repeats)
            print(f"# CurioSFT vs vanilla TRL SFT: {arch} ({device}; batch {batch} x {seq_len} tokens, gradient "
                  f"checkpointing; {r['repeats']} rounds x {steps} steady steps per arm, arms alternating)")
            print(f"step time   nll {r['step_s']['nll']:.3f} s   curiosft {r['step_s']['curiosft']:.3f} s   "
                  f"ratio {r['ratio_median']:.2f}x (rounds {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})   "
                  "(target <= 1.25x)")
            print(f"peak memory ({r['memory']})   nll {r['peak_bytes']['nll'] / 2**20:.0f} MiB   curiosft "
                  f"{r['peak_bytes']['curiosft'] / 2**20:.0f} MiB   teacher weights {r['teacher_bytes'] / 2**20:.0f} MiB"
                  f"   curiosft / (nll + teacher) = {r['memory_ratio']:.2f}   (target <= 1.10)")
            print("RESULT " + json.dumps(r), flush=True)
    if not opts.quick:
        temperature_bench(device)


def temperature_bench(device: str, tokens: int = 256, rounds: int = 5) -> None:
    """Temperature selection per token, each solver next to one full-vocab `log_softmax`, interleaved per round."""
    logits = torch.randn(tokens, VOCAB, device=device) * 3
    fns = {"newton": lambda z: entropy_guided_temperature(z, solver="newton"),
           "bisection": lambda z: entropy_guided_temperature(z, solver="bisection"),
           "log_softmax": lambda z: torch.log_softmax(z, dim=-1)}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_per_token(fn, logits, repeats=1))
    for name in ("newton", "bisection"):
        ratios = [t / s for t, s in zip(times[name], times["log_softmax"])]
        print(f"temperature selection ({name:9s})  {statistics.median(times[name]) * 1e6:7.1f} us/token   "
              f"= {statistics.median(ratios):.2f}x a full-vocab log_softmax (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    speedups = [b / n for b, n in zip(times["bisection"], times["newton"])]
    print(f"newton vs bisection: {statistics.median(speedups):.2f}x faster (rounds {min(speedups):.2f}-"
          f"{max(speedups):.2f}; log_softmax {statistics.median(times['log_softmax']) * 1e6:.1f} us/token)")

if __name__ == "__main__":
    main()
