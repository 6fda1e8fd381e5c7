"""The SFT stage's settings: `CurioSFTConfig` (TRL's `SFTConfig` plus the CurioSFT rule's constants and the choice of
SFT loss) and `SFTScriptArguments` (TRL's `ScriptArguments` plus the data and restart fields of `curiosft-sft`)."""

import dataclasses
import difflib
from dataclasses import dataclass, field

from trl import ScriptArguments, SFTConfig

from ..prompts import SYSTEM_PROMPT
from .fp8 import check_fp8_supported
from .losses import KD_COEF, LOSSES, PAPER_RULE, SFTLoss, TemperatureRule


@dataclass
class CurioSFTConfig(SFTConfig):
    r"""
    Configuration for [`CurioSFTTrainer`]: every [`~trl.SFTConfig`] field, plus the fields below. Defaults are the
    constants of the paper's released implementation (arXiv 2602.02244).
    """

    sft_loss: str = field(default="curiosft", metadata={
        "help": "The SFT loss: " + "; ".join(f"`{k}`: {v.description}" for k, v in LOSSES.items()) + "."})
    kd_coef: float = field(default=KD_COEF, metadata={
        "help": "Weight of the distillation term `0.5 * (log p - log q_tau)^2`."})
    # The temperature rule's fields: named and defaulted as `TemperatureRule`'s (the paper's constants)
    tau_min: float = field(default=PAPER_RULE.tau_min, metadata={"help": "Lowest teacher temperature."})
    tau_max: float = field(default=PAPER_RULE.tau_max, metadata={"help": "Highest teacher temperature."})
    temperature_top_k: int = field(default=PAPER_RULE.temperature_top_k, metadata={
        "help": "Number of top teacher logits whose entropy drives the temperature."})
    entropy_pivot: float = field(default=PAPER_RULE.entropy_pivot, metadata={
        "help": "Entropy (nats) at which the target increment is half its maximum."})
    entropy_slope: float = field(default=PAPER_RULE.entropy_slope, metadata={
        "help": "Slope of the sigmoid around `entropy_pivot`."})
    max_entropy_increment: float = field(default=PAPER_RULE.max_entropy_increment, metadata={
        "help": "Largest entropy increase (nats) asked of the tempered teacher."})
    low_entropy_threshold: float = field(default=PAPER_RULE.low_entropy_threshold, metadata={
        "help": "Where the teacher's full-vocabulary entropy is at most this (nats), tau = `tau_min`."})
    temperature_solver: str = field(default=PAPER_RULE.temperature_solver, metadata={
        "help": "How `H(z / tau) = H*` is solved for tau: `newton` (bracketed Newton steps, to float64 precision; "
                "within ~1e-7 of the authors' tau) or `bisection` (`num_bisection_iterations` steps: the authors' "
                "code, which runs 20)."})
    num_bisection_iterations: int = field(default=PAPER_RULE.num_bisection_iterations, metadata={
        "help": "Bisection steps of `temperature_solver: bisection` (unused by `newton`)."})
    fixed_tau: float = field(default=1.3, metadata={
        "help": "The single teacher temperature of `sft_loss: curiosft_fixed_tau`."})
    ref_model_sync_steps: int = field(default=5, metadata={
        "help": "Mix the student into the teacher every this many optimizer steps."})
    ref_model_mixup_alpha: float = field(default=0.99, metadata={
        "help": "`theta_T <- (1 - alpha) * theta_T + alpha * theta_S` at each sync."})
    teacher_chunk_size: int | None = field(default=None, metadata={
        "help": "Tokens per teacher LM-head chunk, where set (explicit control). Unset: on a GPU, all of a "
                "micro-batch's response tokens at once, split only where their `(tokens, vocab)` buffers would "
                "exceed `teacher_memory_budget_gib`; on the CPU, 256 (cache-sized work; the numbers of the CPU runs "
                "so far)."})
    teacher_memory_budget_gib: float | None = field(default=None, metadata={
        "help": "Memory (GiB) for one teacher chunk's `(tokens, vocab)` buffers, 12 bytes a logit (the logits and "
                "two float32 scratch buffers): 2,048 tokens x 152k vocab = 3.5 GiB. Unset: half the device's free "
                "memory at each micro-batch on a GPU (none on the CPU). Unused where `teacher_chunk_size` is set."})
    teacher_compile: bool = field(default=False, metadata={
        "help": "Run the teacher's temperature selection and gold log-prob through `torch.compile` (the token count "
                "dynamic: no recompile per micro-batch). Off by default: on one H200 (torch 2.11) it takes 5.2 ms per "
                "2,048 tokens in one chunk vs 9.6 eager, ~2 percent of a ~300 ms step, but the first step pays the "
                "compile and it is not yet measured inside a training step."})
    teacher_fp8: bool = field(default=False, metadata={
        "help": "Experimental, unmeasured: run the frozen teacher backbone's linear layers in fp8 (e4m3, per-tensor "
                "scales, `torch._scaled_mm`), re-quantised after each teacher sync; the LM head stays at full "
                "precision. Needs a CUDA GPU of compute capability >= 8.9 (Ada, Hopper) and a teacher copy."})
    entropy_coef: float = field(default=0.01, metadata={
        "help": "Entropy bonus weight of `entropy_reg` and `top_entropy_reg`."})
    entropy_top_ratio: float = field(default=0.2, metadata={
        "help": "Fraction of highest-entropy tokens that get the bonus in `top_entropy_reg`."})

    def __post_init__(self):
        if self.sft_loss not in LOSSES:
            close = difflib.get_close_matches(self.sft_loss, LOSSES, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(f"sft_loss: unknown value `{self.sft_loss}`; expected one of {list(LOSSES)}.{hint}")
        self.temperature_rule  # building the rule checks the tau range and the solver
        if self.fixed_tau <= 0:
            raise ValueError(f"fixed_tau ({self.fixed_tau}) must be a positive temperature.")
        if self.ref_model_sync_steps < 1 or not 0 <= self.ref_model_mixup_alpha <= 1:
            raise ValueError("ref_model_sync_steps must be >= 1 and ref_model_mixup_alpha within [0, 1].")
        if not 0 < self.entropy_top_ratio <= 1:
            raise ValueError(f"entropy_top_ratio ({self.entropy_top_ratio}) must be within (0, 1].")
        if self.teacher_chunk_size is not None and self.teacher_chunk_size < 1:
            raise ValueError("teacher_chunk_size must be >= 1 (or unset: planned from the memory budget).")
        if self.teacher_memory_budget_gib is not None and self.teacher_memory_budget_gib <= 0:
            raise ValueError(f"teacher_memory_budget_gib ({self.teacher_memory_budget_gib}) must be > 0.")
        if self.teacher_fp8:
            check_fp8_supported(self.loss, self.use_cpu)
        # The TRL-native losses are selected through TRL's own fields, so `SFTTrainer` runs them unchanged
        if self.sft_loss == "dft":
            self.loss_type = "dft"
        elif self.sft_loss == "label_smoothing" and not self.label_smoothing_factor:
            self.label_smoothing_factor = 0.1
        if self.sft_loss != "label_smoothing" and self.label_smoothing_factor:
            raise ValueError("label_smoothing_factor is only used with `sft_loss: label_smoothing`.")
        super().__post_init__()

    @property
    def loss(self) -> SFTLoss:
        """The registry entry (`losses.LOSSES`) of `sft_loss`."""
        return LOSSES[self.sft_loss]

    @property
    def temperature_rule(self) -> TemperatureRule:
        """The teacher's temperature rule, from the fields of the same names."""
        return TemperatureRule(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TemperatureRule)})


@dataclass
class SFTScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` (`dataset_name` may be a hub id or a local JSONL/JSON/parquet path), plus:"""

    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={
        "help": "System prompt put before each problem (LUFFY's by default)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    fresh_start: bool = field(default=False, metadata={
        "help": "Ignore checkpoints in `output_dir` and start from step 0."})
