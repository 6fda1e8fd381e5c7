"""`make bench`: CurioSFT's cost against vanilla TRL SFT, measured side by side in one run and printed as ratios.

1. SFT step time and peak memory, `sft_loss: curiosft` vs `sft_loss: nll`, at real models' shapes with random
   weights: Qwen2.5-0.5B (vocabulary 151,936, batch 1 x 512 tokens), SmolLM2-135M (49,152, batch 4 x 512) and a
   shallow 4-layer model under Qwen2.5's vocabulary (the worst case: the LM head dominates), gradient checkpointing.
   Each arm runs in its own process (`bench/sft_step.py`: its peak memory is its own); arms alternate
   (nll, curiosft, nll, curiosft, ...) over `--repeats` rounds, so a slow spell of the machine hits both. A round's
   ratio is the median of its CurioSFT steady steps over the median of its vanilla ones; printed: the median ratio
   and its range over rounds. Targets (issue 13): time <= 1.25x; peak memory <= vanilla + teacher weights + 10%.
   `--baseline SRC` adds a third alternating arm: CurioSFT from another checkout's `src/` (e.g. a `git worktree` of
   an older commit), so a change's before and after are measured in the same run; `--shapes` picks shapes by name.
2. The teacher side per token on full-vocabulary logits (everything CurioSFT computes from the teacher's logits:
   entropy, top-k, the temperature solve, the gold log-prob at tau), each next to one `log_softmax` over the same
   logits (the unit of cost of any LM loss), interleaved over rounds: medians and the range across rounds.
   `one pass` is the trainer's `teacher_gold_logprobs`; `separate passes` composes the same numbers from
   `entropy_guided_temperature` (full-vocab entropy via log_softmax) and a `log_softmax(z / tau)`, as the teacher
   did before the one-pass head, with the Newton and with the bisection solve. `part:` rows time the two things the
   exact rule cannot skip, one top-k and one fused exp sweep over the vocabulary (`logsumexp`: the entropy and the
   gold log-prob at tau each need all V logits): their sum is the floor of an implementation without a fused kernel.
   `--temperature` runs this part only.

`--quick`: one round of a tiny shape, 2 + 2 steps: a smoke test (tests/test_bench.py), not a measurement.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from curiosft_trl.sft.losses import TemperatureRule, entropy_guided_temperature, teacher_gold_logprobs

HERE = Path(__file__).resolve().parent
VOCAB = 151_936
WARMUP_STEPS = 2  # sft_step.py times from its third step on

# (arch, per-device batch, sequence length, steady steps per process)
SHAPES = [("qwen2.5-0.5b", 1, 512, 5), ("smollm2-135m", 4, 512, 5), ("shallow", 2, 512, 5)]
QUICK_SHAPES = [("tiny", 2, 128, 2)]


BASELINE = "curiosft@baseline"


def run_arm(arm: str, arch: str, batch: int, seq_len: int, steps: int, baseline: str | None = None) -> dict:
    """One arm in its own process; `curiosft@baseline` imports the library from the `baseline` checkout's src/."""
    env = dict(os.environ)
    if arm == BASELINE:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, str(HERE / "sft_step.py"), arm.split("@")[0], "--arch", arch, "--batch",
                          str(batch), "--seq-len", str(seq_len), "--steps", str(steps + WARMUP_STEPS)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_bench(arch: str, batch: int, seq_len: int, steps: int, repeats: int, baseline: str | None = None) -> dict:
    """Alternating nll / curiosft (/ baseline curiosft) processes; per round the ratio of median steady step times."""
    arms = ("nll", "curiosft", BASELINE) if baseline else ("nll", "curiosft")
    rounds = []
    for _ in range(repeats):
        rounds.append({arm: run_arm(arm, arch, batch, seq_len, steps, baseline) for arm in arms})

    def ratios(arm: str) -> list[float]:
        return [statistics.median(r[arm]["steady_step_s"]) / statistics.median(r["nll"]["steady_step_s"])
                for r in rounds]

    step = {arm: statistics.median(t for r in rounds for t in r[arm]["steady_step_s"]) for arm in arms}
    peak = {arm: max(r[arm]["peak_bytes"] for r in rounds) for arm in arms}
    teacher = rounds[0]["curiosft"]["model_bytes"]
    result = {"arch": arch, "batch": batch, "seq_len": seq_len, "steps": steps, "repeats": repeats,
              "memory": rounds[0]["nll"]["memory"], "step_s": step, "ratio_median": statistics.median(ratios("curiosft")),
              "ratio_range": [min(ratios("curiosft")), max(ratios("curiosft"))], "peak_bytes": peak,
              "teacher_bytes": teacher, "memory_ratio": peak["curiosft"] / (peak["nll"] + teacher)}
    result["library"] = {arm: rounds[0][arm]["library"] for arm in arms}
    if baseline:
        result |= {"baseline": baseline, "baseline_ratio_median": statistics.median(ratios(BASELINE)),
                   "baseline_ratio_range": [min(ratios(BASELINE)), max(ratios(BASELINE))]}
    return result


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
    parser.add_argument("--shapes", help=f"comma-separated shapes (default all: {', '.join(s[0] for s in SHAPES)})")
    parser.add_argument("--baseline", help="another checkout's src/ folder: its CurioSFT as a third alternating arm")
    opts = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = QUICK_SHAPES if opts.quick else SHAPES
    if opts.shapes:
        shapes = [s for s in SHAPES + QUICK_SHAPES if s[0] in opts.shapes.split(",")]
    baseline = str(Path(opts.baseline).resolve()) if opts.baseline else None
    if not opts.temperature:
        for arch, batch, seq_len, steps in shapes:
            r = step_bench(arch, batch, seq_len, steps, 1 if opts.quick else opts.repeats, baseline)
            print(f"# CurioSFT vs vanilla TRL SFT: {arch} ({device}; batch {batch} x {seq_len} tokens, gradient "
                  f"checkpointing; {r['repeats']} rounds x {steps} steady steps per arm, arms alternating)")
            print(f"step time   nll {r['step_s']['nll']:.3f} s   curiosft {r['step_s']['curiosft']:.3f} s   "
                  f"ratio {r['ratio_median']:.2f}x (rounds {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})   "
                  "(target <= 1.25x)")
            if baseline:
                print(f"baseline    curiosft {r['step_s'][BASELINE]:.3f} s   ratio {r['baseline_ratio_median']:.2f}x "
                      f"(rounds {r['baseline_ratio_range'][0]:.2f}-{r['baseline_ratio_range'][1]:.2f})   from {baseline}")
            print(f"peak memory ({r['memory']})   nll {r['peak_bytes']['nll'] / 2**20:.0f} MiB   curiosft "
                  f"{r['peak_bytes']['curiosft'] / 2**20:.0f} MiB   teacher weights {r['teacher_bytes'] / 2**20:.0f} MiB"
                  f"   curiosft / (nll + teacher) = {r['memory_ratio']:.2f}   (target <= 1.10)")
            print("RESULT " + json.dumps(r), flush=True)
    if not opts.quick:
        temperature_bench(device)


def separate_passes(z: torch.Tensor, y: torch.Tensor, solver: str) -> torch.Tensor:
    """The teacher's numbers as composed before the one-pass head: the rule with its full-vocab entropy, then the gold
    log-prob from a log_softmax at tau."""
    tau = entropy_guided_temperature(z, TemperatureRule(temperature_solver=solver))
    return torch.log_softmax(z / tau.unsqueeze(-1), dim=-1).gather(-1, y.unsqueeze(-1))


def temperature_bench(device: str, tokens: int = 256, rounds: int = 5) -> None:
    """The teacher side per token, each way of computing it next to one full-vocab `log_softmax`, interleaved."""
    logits = torch.randn(tokens, VOCAB, device=device) * 3
    labels = torch.randint(0, VOCAB, (tokens,), device=device)
    fns = {"one pass (newton)": lambda z: teacher_gold_logprobs(z, labels),
           "separate passes (newton)": lambda z: separate_passes(z, labels, "newton"),
           "separate passes (bisection)": lambda z: separate_passes(z, labels, "bisection"),
           # the floor's parts: what any exact teacher side must do besides the temperature solve on K = 512 values
           "part: topk 512": lambda z: z.topk(512, dim=-1),
           "part: one logsumexp": lambda z: torch.logsumexp(z, dim=-1),
           "log_softmax": lambda z: torch.log_softmax(z, dim=-1)}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_per_token(fn, logits, repeats=1))
    print(f"# The teacher side per token ({device}; {tokens} tokens x {VOCAB:,} logits, {rounds} interleaved rounds; "
          "target <= 1x a log_softmax)")
    for name in fns:
        if name == "log_softmax":
            continue
        ratios = [t / s for t, s in zip(times[name], times["log_softmax"])]
        print(f"{name:28s} {statistics.median(times[name]) * 1e6:7.1f} us/token   = {statistics.median(ratios):.2f}x a "
              f"full-vocab log_softmax (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"log_softmax                  {statistics.median(times['log_softmax']) * 1e6:7.1f} us/token")


if __name__ == "__main__":
    main()
