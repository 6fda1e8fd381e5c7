"""The GRPO stage's settings: `RLScriptArguments` (TRL's `ScriptArguments` plus the prompts, rewards and restart
fields of `curiosft-rl`); the trainer's are TRL's own `GRPOConfig`."""

from dataclasses import dataclass, field

from trl import ScriptArguments

from ..prompts import SYSTEM_PROMPT


@dataclass
class RLScriptArguments(ScriptArguments):
    """TRL's `ScriptArguments` (`dataset_name` may be a hub id or a local JSONL/JSON/parquet path), plus:"""

    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={
        "help": "System prompt put before each problem; must be the one the SFT stage used."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["curiosft_trl.rl.rewards.think_accuracy_reward"],
        metadata={"help": "Reward functions as dotted paths, e.g. `curiosft_trl.rl.rewards.think_accuracy_reward`."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N prompts only."})
    fresh_start: bool = field(default=False, metadata={
        "help": "Ignore checkpoints in `output_dir` and start from step 0."})
