"""Teacher-forced token statistics on held-out solutions: where does a model keep its entropy?

Every model is scored on the same token sequences (one tokenizer and chat template for all), so position `i` of one
model's arrays is the same token as position `i` of another's, and tokens can be grouped by what the *base* model did
there. The groups are quantiles of the base model's entropy (equal-count buckets by rank), which mean the same on any
model, unlike a fixed threshold in nats (0.5 nats put 77% of SmolLM2-135M's tokens on MATH solutions in "forks").
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..errors import DataError
from ..sft.losses import entropy_from_logits


def encode_heldout(tokenizer, rows: Sequence[dict]) -> list[tuple[list[int], int]]:
    """Each prompt-completion row (TRL's conversational format) as `(token ids, index of its first completion
    token)`, tokenized as TRL's `SFTTrainer` tokenizes it for training: the chat template's rendering of
    `prompt + completion`, whose completion starts where it stops agreeing with the rendering of `prompt` with the
    generation prompt (token by token, so a merge across the boundary cannot shift it)."""
    from trl.data_utils import common_prefix_length  # here: TRL imports transformers, which the rest does not need

    def render(messages, **kwargs) -> list[int]:
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]

    encoded = []
    for i, row in enumerate(rows):
        full = render(row["prompt"] + row["completion"])
        start = common_prefix_length(render(row["prompt"], add_generation_prompt=True), full)
        if not 0 < start < len(full):
            missing = "no prompt" if start == 0 else "no completion"
            raise DataError(f"held-out row {i}: the chat template leaves {missing} token to score; expected a prompt "
                            "and a non-empty completion.")
        encoded.append((full, start))
    return encoded


@torch.no_grad()
def token_stats(model, encoded: Sequence[tuple[list[int], int]], batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Teacher-forced statistics of every completion token, rows concatenated in order:
    `entropy` (T,) nats of the next-token distribution, `nll` (T,) of the gold token, `row` (T,) its row index.
    T is the total number of completion tokens. Rows are right-padded per batch; padding is never scored."""
    device = next(model.parameters()).device
    entropy, nll, row_ids = [], [], []
    for first in range(0, len(encoded), batch_size):
        batch = encoded[first : first + batch_size]
        input_ids = pad_sequence([torch.tensor(ids, dtype=torch.long) for ids, _ in batch], batch_first=True)
        attention = pad_sequence([torch.ones(len(ids), dtype=torch.long) for ids, _ in batch], batch_first=True)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        for i, (ids, start) in enumerate(batch):
            # the logits at position t predict token t + 1: completion tokens start..len-1 are scored by start-1..len-2
            scored = logits[i, start - 1 : len(ids) - 1].float()
            gold = torch.tensor(ids[start:], device=scored.device)
            entropy.append(entropy_from_logits(scored).cpu())
            nll.append(F.cross_entropy(scored, gold, reduction="none").cpu())
            row_ids.append(torch.full((len(gold),), first + i))
    return {"entropy": torch.cat(entropy), "nll": torch.cat(nll), "row": torch.cat(row_ids)}


def quantile_buckets(base_entropy: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """`(T,)` bucket index 0..n_buckets-1 of each token by the rank of the base model's entropy there: bucket 0 holds
    the `T / n_buckets` tokens the base was surest of, the last bucket its most uncertain ("forks"). Ties are broken by
    position, so every bucket has the same size (to within one token) even where many entropies are ~0."""
    if n_buckets < 1 or n_buckets > len(base_entropy):
        raise ValueError(f"n_buckets must be in 1..{len(base_entropy)} (the number of tokens), got {n_buckets}")
    rank = torch.empty(len(base_entropy), dtype=torch.long)
    rank[torch.argsort(base_entropy, stable=True)] = torch.arange(len(base_entropy))
    return rank * n_buckets // len(base_entropy)


def bucket_means(values: torch.Tensor, buckets: torch.Tensor, n_buckets: int) -> list[float]:
    """The mean of `values` (T,) in each bucket (`buckets` (T,) from `quantile_buckets`)."""
    sums = torch.zeros(n_buckets, dtype=torch.float64).index_add_(0, buckets, values.double())
    counts = torch.bincount(buckets, minlength=n_buckets).double()
    return (sums / counts).tolist()
