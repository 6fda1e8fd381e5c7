"""The teacher side of a CurioSFT step, part by part: median milliseconds per call, on the GPU (CUDA events) or CPU.

    python bench/teacher_side.py                 # 2,048 response tokens x Qwen2.5's 151,936 vocabulary, hidden 1536
    python bench/teacher_side.py --quick         # toy shapes (a smoke test; seconds on a CPU)
    python bench/teacher_side.py --compile       # add the torch.compile'd `teacher_gold_logprobs` (default on a GPU)

Parts: the LM head (`F.linear`, bf16 on a GPU), a log_softmax + gather (what vanilla SFT pays per token), the
top-k, the temperature solve (Newton in float64 and float32, bisection), and the whole `teacher_gold_logprobs` of
all tokens in chunks of each `--chunks` size (0 = one chunk), eager and compiled. Needs torch only: `losses.py` is
loaded from its file, not through the package (a GPU node without TRL runs it). The last line is `RESULT {json}`.
"""

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

LOSSES_FILE = Path(__file__).resolve().parents[1] / "src" / "curiosft_trl" / "sft" / "losses.py"


def load_losses():
    spec = importlib.util.spec_from_file_location("curiosft_losses", LOSSES_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def median_ms(fn, repeats: int, cuda: bool) -> float:
    """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up (CUDA events on a GPU)."""
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy shapes: 256 tokens x 8,192 vocabulary, hidden 128")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--top-k", type=int, default=512)
    parser.add_argument("--chunks", type=int, nargs="+", default=None,
                        help="chunk sizes, 0 = all tokens at once (default 256 and 0; quick: 64 and 0)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per part (default 20, quick 3)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the compiled teacher side (default: on a GPU, not with --quick)")
    parser.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    opts = parser.parse_args()
    if opts.quick:
        opts.tokens, opts.vocab, opts.hidden = 256, 8192, 128
    opts.chunks = opts.chunks or ([64, 0] if opts.quick else [256, 0])
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    repeats = opts.repeats or (3 if opts.quick else 20)
    use_compile = opts.compile if opts.compile is not None else cuda and not opts.quick
    losses = load_losses()
    rule = losses.TemperatureRule(temperature_top_k=min(opts.top_k, opts.vocab))

    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32  # the head's dtype under bf16 autocast on a GPU
    n, vocab = opts.tokens, opts.vocab
    hidden = torch.randn(n, opts.hidden, device=device, dtype=dtype)
    weight = torch.randn(vocab, opts.hidden, device=device, dtype=dtype) / opts.hidden**0.5 * 4
    labels = torch.randint(0, vocab, (n,), device=device)
    logits = F.linear(hidden, weight)  # (N, V)
    top = logits.topk(rule.temperature_top_k, dim=-1).values

    def teacher(chunk: int, fn) -> None:
        size = chunk or n
        for start in range(0, n, size):
            z = F.linear(hidden[start:start + size], weight)
            fn(z, labels[start:start + size], rule)

    parts = {
        "head": lambda: F.linear(hidden, weight),
        "log_softmax_gather": lambda: logits.float().log_softmax(-1).gather(-1, labels[:, None]),
        f"topk_{rule.temperature_top_k}": lambda: logits.topk(rule.temperature_top_k, dim=-1),
        "solve_newton_f64": lambda: losses.solve_temperature(top, rule, torch.float64),
        "solve_newton_f32": lambda: losses.solve_temperature(top, rule, torch.float32),
        "solve_bisection_f64": lambda: losses.solve_temperature(
            top, losses.TemperatureRule(temperature_top_k=rule.temperature_top_k, temperature_solver="bisection")),
    }
    for chunk in opts.chunks:
        parts[f"teacher_gold_logprobs_chunks_{chunk or n}"] = lambda c=chunk: teacher(c, losses.teacher_gold_logprobs)
    if use_compile:  # after every eager part: a compile failure is recorded and ends no run
        for chunk in opts.chunks:
            parts[f"teacher_gold_logprobs_chunks_{chunk or n}_compiled"] = (
                lambda c=chunk: teacher(c, losses.compiled_teacher_gold_logprobs()))
    ms, errors = {}, {}
    for name, fn in parts.items():
        try:
            ms[name] = round(median_ms(fn, repeats, cuda), 3)  # the warm-up call compiles
        except Exception as e:  # noqa: BLE001 - e.g. an inductor error on this torch: recorded, the rest run
            errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"{name:48s} failed: {errors[name]}", flush=True)
            continue
        print(f"{name:48s} {ms[name]:10.3f} ms", flush=True)
    result = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "tokens": n, "vocab": vocab, "hidden": opts.hidden,
              "head_dtype": str(dtype), "repeats": repeats, "clock": "cuda_events" if cuda else "perf_counter",
              "quick": opts.quick, "compiled": use_compile, "median_ms": ms, "errors": errors}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
