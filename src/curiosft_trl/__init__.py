"""CurioSFT: entropy-preserving SFT via adaptive self-distillation, as a TRL plugin.

The pipeline is one package per stage: `sft` (CurioSFT and its baselines on TRL's `SFTTrainer`), `rl` (GRPO on
TRL's `GRPOTrainer` with verifiable math rewards) and `evaluation` (vLLM or transformers generation, avg@n and
pass@k). The public API below is importable from the top, like TRL's::

    from curiosft_trl import CurioSFTConfig, CurioSFTTrainer

Names are resolved on first use (PEP 562), so `import curiosft_trl` stays cheap: TRL, transformers and vLLM are
imported only by the name that needs them.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "DataError": "curiosft_trl.errors",
    "RecipeError": "curiosft_trl.errors",
    # SFT
    "CurioSFTConfig": "curiosft_trl.sft.config",
    "CurioSFTTrainer": "curiosft_trl.sft.trainer",
    "entropy_guided_temperature": "curiosft_trl.sft.losses",
    "curiosft_per_token_loss": "curiosft_trl.sft.losses",
    "load_sft_dataset": "curiosft_trl.sft.data",
    # RL
    "CurioGRPOTrainer": "curiosft_trl.rl.trainer",
    "load_rl_dataset": "curiosft_trl.rl.data",
    "think_accuracy_reward": "curiosft_trl.rl.rewards",
    # evaluation
    "EvalConfig": "curiosft_trl.evaluation.config",
    "evaluate": "curiosft_trl.evaluation.harness",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'curiosft_trl' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
