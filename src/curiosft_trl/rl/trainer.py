"""`CurioGRPOTrainer`: TRL's `GRPOTrainer` plus two metrics of the paper's RL stage, `pass@G` and `grader_timeouts`.

Both come from `_calculate_rewards`, which returns the rewards of the whole rollout batch gathered over processes,
`(B * G, F)` for B prompts, G = `num_generations` samples each and F reward functions, rows grouped by prompt, and
are appended to `self._metrics[mode]` like TRL's own metrics (averaged over each logging window):

- `pass@G`: the fraction of prompts with at least one correct completion among its G samples, where a completion is
  correct when its (weighted) total reward is > 0 (our rewards are 1/0 verifiers). Next to TRL's `reward` (the mean,
  i.e. avg@G), it shows whether the group still contains a success to learn from.
- `grader_timeouts`: completions of the rollout batch (all processes) whose grading timed out and scored 0.0
  (`curiosft_trl.rl.rewards.timeouts()`).

A reward function that scores no completion of a batch or any with an infinity stops the run (`check_rewards`). The
model card names a local base model (an SFT checkpoint) instead of TRL's "None" (`model_card.name_base_model`).
"""

from pathlib import Path

import torch
from accelerate.utils import gather
from trl import GRPOTrainer

from ..errors import RecipeError
from ..model_card import name_base_model
from . import rewards


def pass_at_group(rewards_per_func: torch.Tensor, weights: torch.Tensor, num_generations: int) -> float:
    """Fraction of groups with a completion whose total reward is > 0.

    rewards_per_func: `(B * G, F)`, rows grouped by prompt (NaN where a function did not score a row);
    weights: `(F,)`.
    """
    total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # (B * G,)
    return (total.view(-1, num_generations) > 0).any(dim=1).float().mean().item()


def check_rewards(rewards_per_func: torch.Tensor, names: list[str], step: int) -> None:
    """`(B * G, F)` rewards: each function must give a finite reward to some completion of the batch (TRL reads a
    `None` as NaN, "does not apply", and leaves it out; all NaN means the function scored nothing, and GRPO would train
    on no signal without a word) and never an infinite one."""
    for column, name in zip(rewards_per_func.T, names, strict=True):
        if torch.isinf(column).any() or torch.isnan(column).all():
            what = "an infinite reward" if torch.isinf(column).any() else "no finite reward (None or NaN)"
            raise RecipeError(f"reward_funcs: `{name}` returned {what} for the {len(column)} completions of step "
                              f"{step}; a reward function returns one finite float per completion.")


class CurioGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` that also logs `pass@G` and `grader_timeouts` (see the module docstring)."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        timeouts_before = rewards.timeouts()
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        check_rewards(rewards_per_func, self.reward_func_names, self.state.global_step)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights = self.reward_weights.to(rewards_per_func.device)
        self._metrics[mode]["pass@G"].append(pass_at_group(rewards_per_func, weights, num_generations))
        local = torch.tensor([float(rewards.timeouts() - timeouts_before)], device=rewards_per_func.device)
        self._metrics[mode]["grader_timeouts"].append(gather(local).sum().item())
        return rewards_per_func

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        name_base_model(Path(self.args.output_dir) / "README.md", self.model.config,
                        self.hub_model_id or self.args.output_dir)
