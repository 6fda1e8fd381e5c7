"""The SFT stage's settings: `CurioSFTConfig` (TRL's `SFTConfig` plus the CurioSFT rule's constants and the choice of
SFT loss) and `SFTScriptArguments` (TRL's `ScriptArguments` plus the data and restart fields of `curiosft-sft`)."""

import difflib
from dataclasses import dataclass, field

from trl import ScriptArguments, SFTConfig

from ..prompts import SYSTEM_PROMPT

# `sft_loss` -> what it trains with. The first three are TRL's own losses, run by `SFTTrainer` unchanged.
SFT_LOSSES = {
    "nll": "TRL's negative log-likelihood (vanilla SFT)",
    "dft": "TRL's DFT: NLL weighted by the detached gold-token probability",
    "label_smoothing": "TRL's NLL with `label_smoothing_factor` (0.1 unless set)",
    "entropy_reg": "NLL - entropy_coef * token entropy (a positive coef raises entropy)",
    "top_entropy_reg": "like entropy_reg, with the bonus only on the top `entropy_top_ratio` highest-entropy tokens",
    "curiosft": "CurioSFT: self-distillation toward a synced teacher at an entropy-guided temperature",
    "curiosft_fixed_tau": "CurioSFT ablation: one teacher temperature `fixed_tau` everywhere",
    "curiosft_live_teacher": "CurioSFT ablation: the live model (stop-gradient) is the teacher; no copy kept",
}
TEACHER_LOSSES = ("curiosft", "curiosft_fixed_tau")
DISTILLATION_LOSSES = ("curiosft", "curiosft_fixed_tau", "curiosft_live_teacher")


@dataclass
class CurioSFTConfig(SFTConfig):
    r"""
    Configuration for [`CurioSFTTrainer`]: every [`~trl.SFTConfig`] field, plus the fields below. Defaults are the
    constants of the paper's released implementation (arXiv 2602.02244).
    """

    sft_loss: str = field(
        default="curiosft",
        metadata={"help": "The SFT loss: " + "; ".join(f"`{k}`: {v}" for k, v in SFT_LOSSES.items()) + "."},
    )
    kd_coef: float = field(
        default=1.0, metadata={"help": "Weight of the distillation term `0.5 * (log p - log q_tau)^2`."}
    )
    tau_min: float = field(default=1.1, metadata={"help": "Lowest teacher temperature."})
    tau_max: float = field(default=1.5, metadata={"help": "Highest teacher temperature."})
    temperature_top_k: int = field(
        default=512, metadata={"help": "Number of top teacher logits whose entropy drives the temperature."}
    )
    entropy_pivot: float = field(
        default=1.2, metadata={"help": "Entropy (nats) at which the target increment is half its maximum."}
    )
    entropy_slope: float = field(default=2.0, metadata={"help": "Slope of the sigmoid around `entropy_pivot`."})
    max_entropy_increment: float = field(
        default=0.5, metadata={"help": "Largest entropy increase (nats) asked of the tempered teacher."}
    )
    temperature_solver: str = field(
        default="newton",
        metadata={"help": "How `H(z / tau) = H*` is solved for tau: `newton` (bracketed Newton steps, to float64 "
                          "precision) or `bisection` (`num_bisection_iterations` steps, as the authors' code)."},
    )
    num_bisection_iterations: int = field(
        default=20, metadata={"help": "Bisection steps of `temperature_solver: bisection`."}
    )
    low_entropy_threshold: float = field(
        default=0.03,
        metadata={"help": "Where the teacher's full-vocabulary entropy is at most this (nats), tau = `tau_min`."},
    )
    fixed_tau: float = field(
        default=1.3, metadata={"help": "The single teacher temperature of `sft_loss: curiosft_fixed_tau`."}
    )
    ref_model_sync_steps: int = field(
        default=5, metadata={"help": "Mix the student into the teacher every this many optimizer steps."}
    )
    ref_model_mixup_alpha: float = field(
        default=0.99, metadata={"help": "`theta_T <- (1 - alpha) * theta_T + alpha * theta_S` at each sync."}
    )
    teacher_chunk_size: int = field(
        default=256,
        metadata={
            "help": "Tokens per teacher LM-head chunk: bounds the float32 `(tokens, vocab)` logits held (256 x "
            "152k vocab = 156 MB per buffer, under the 512 MB tile of TRL's fused student head)."
        },
    )
    entropy_coef: float = field(
        default=0.01, metadata={"help": "Entropy bonus weight of `entropy_reg` and `top_entropy_reg`."}
    )
    entropy_top_ratio: float = field(
        default=0.2, metadata={"help": "Fraction of highest-entropy tokens that get the bonus in `top_entropy_reg`."}
    )

    def __post_init__(self):
        if self.sft_loss not in SFT_LOSSES:
            close = difflib.get_close_matches(self.sft_loss, SFT_LOSSES, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise ValueError(f"sft_loss: unknown value `{self.sft_loss}`; expected one of {list(SFT_LOSSES)}.{hint}")
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must be <= tau_max ({self.tau_max}).")
        if self.tau_min <= 0 or self.fixed_tau <= 0:
            raise ValueError("tau_min and fixed_tau must be positive temperatures.")
        if self.ref_model_sync_steps < 1 or not 0 <= self.ref_model_mixup_alpha <= 1:
            raise ValueError("ref_model_sync_steps must be >= 1 and ref_model_mixup_alpha within [0, 1].")
        if not 0 < self.entropy_top_ratio <= 1:
            raise ValueError(f"entropy_top_ratio ({self.entropy_top_ratio}) must be within (0, 1].")
        if self.temperature_solver not in ("newton", "bisection"):
            raise ValueError(f"temperature_solver: unknown value `{self.temperature_solver}`; expected `newton` or "
                             "`bisection`.")
        if self.teacher_chunk_size < 1:
            raise ValueError("teacher_chunk_size must be >= 1.")
        # The TRL-native losses are selected through TRL's own fields, so `SFTTrainer` runs them unchanged
        if self.sft_loss == "dft":
            self.loss_type = "dft"
        elif self.sft_loss == "label_smoothing" and not self.label_smoothing_factor:
            self.label_smoothing_factor = 0.1
        if self.sft_loss != "label_smoothing" and self.label_smoothing_factor:
            raise ValueError("label_smoothing_factor is only used with `sft_loss: label_smoothing`.")
        super().__post_init__()

    @property
    def temperature_kwargs(self) -> dict:
        """Keyword arguments of `losses.entropy_guided_temperature` (or the fixed tau)."""
        if self.sft_loss == "curiosft_fixed_tau":
            return {"fixed_tau": self.fixed_tau}
        return dict(
            tau_min=self.tau_min,
            tau_max=self.tau_max,
            top_k=self.temperature_top_k,
            entropy_pivot=self.entropy_pivot,
            entropy_slope=self.entropy_slope,
            max_entropy_increment=self.max_entropy_increment,
            num_iterations=self.num_bisection_iterations,
            solver=self.temperature_solver,
            low_entropy_threshold=self.low_entropy_threshold,
        )


@dataclass
class SFTScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` (`dataset_name` may be a hub id or a local JSONL/JSON/parquet path), plus:"""

    system_prompt: str = field(
        default=SYSTEM_PROMPT, metadata={"help": "System prompt put before each problem (LUFFY's by default)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    fresh_start: bool = field(
        default=False, metadata={"help": "Ignore checkpoints in `output_dir` and start from step 0."}
    )
