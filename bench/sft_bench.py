"""`make bench`: CurioSFT's cost against vanilla TRL SFT, measured side by side in one run and printed as ratios.

1. SFT step time and peak memory, `sft_loss: curiosft` vs `sft_loss: nll`, on Qwen2 models with Qwen2.5's
   151,936-token vocabulary (Qwen2.5-0.5B's shape, and a shallow 4-layer one where the LM head dominates), sequence
   length 512, gradient checkpointing on; each arm in its own process (`bench/sft_step.py`).
   Targets (issue): time <= 1.35x vanilla; peak memory <= vanilla + the teacher's weights + 10%.
2. Temperature selection alone: `entropy_guided_temperature` per token on full-vocabulary logits, with the Newton
   and the bisection solver, each next to one `log_softmax` over the same logits (the unit of cost of any LM loss),
   interleaved over rounds: medians and the range across rounds. `--temperature` runs this part only.
"""

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


# (arch, per-device batch, steps): the 0.5B shape is the realistic case, the shallow one the worst case
ARMS = [("qwen2.5-0.5b", 1, 4), ("shallow", 2, 6)]


def run_arm(sft_loss: str, arch: str, batch: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "sft_step.py"), sft_loss, "--arch", arch, "--batch", str(batch),
                          "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "--temperature" in sys.argv[1:]:
        temperature_bench(device)
        return
    for arch, batch, steps in ARMS:
        print(f"# CurioSFT vs vanilla TRL SFT: {arch} ({device}; vocab {VOCAB}, seq 512, batch {batch}, "
              "gradient checkpointing)")
        vanilla, curio = run_arm("nll", arch, batch, steps), run_arm("curiosft", arch, batch, steps)
        budget = vanilla["peak_bytes"] + curio["model_bytes"]
        print(f"step time   nll {vanilla['step_s']:.3f} s   curiosft {curio['step_s']:.3f} s   "
              f"ratio {curio['step_s'] / vanilla['step_s']:.2f}x   (target <= 1.35x)")
        print(f"peak memory ({curio['memory']})   nll {vanilla['peak_bytes'] / 2**20:.0f} MiB   "
              f"curiosft {curio['peak_bytes'] / 2**20:.0f} MiB   teacher weights {curio['model_bytes'] / 2**20:.0f} MiB")
        print(f"            curiosft / (nll + teacher) = {curio['peak_bytes'] / budget:.2f}   (target <= 1.10)")

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
