"""RL prompts: load a prompt dataset and shape it for TRL's `GRPOTrainer` (a `prompt` column and a gold `answer`).

The prompt is built exactly as in the SFT stage (`curiosft_trl.prompts.prompt_messages`: system prompt + problem,
conversational, so the chat template opens `<think>`), and the rewards read the gold from the `answer` column.
Accepted row layouts:

- `problem` + `answer` (MATH-style prompt files, the tiny task's `rl_train.jsonl`);
- `prompt` + `answer`: a prompt string is wrapped like a problem, a message list is used as it is;
- `prompt` + `reward_model` (LUFFY / verl parquet, e.g. `Elliott/Openr1-Math-46k-8192`): the gold is
  `reward_model["ground_truth"]`.

Other columns (`level`, `id`, ...) are dropped, except the ones the rewards read (`answer`, `choices`).
"""

from datasets import Dataset

from ..errors import DataError
from ..prompts import SYSTEM_PROMPT, prompt_messages
from ..readers import chat_problem, load_raw_dataset

LAYOUTS = "`problem`+`answer`, `prompt`+`answer`, or `prompt`+`reward_model` (verl/LUFFY)"
KEPT_COLUMNS = ("choices",)  # besides `prompt` and `answer`: columns a reward function may read
_KEYS = (("problem", "answer"), ("prompt", "answer"), ("prompt", "reward_model"))  # (text, gold) per layout, in order


def _gold(value) -> str | None:
    if isinstance(value, dict):  # verl: {"style": "rule", "ground_truth": "72" or ["72"]}
        value = value.get("ground_truth")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else str(value)


def to_rl_prompts(dataset: Dataset, source: str, system_prompt: str | None = SYSTEM_PROMPT) -> Dataset:
    """Rows of any accepted layout -> `{"prompt": [system?, user], "answer": str}`; errors name the source and row."""
    columns = set(dataset.column_names)
    keys = next((keys for keys in _KEYS if set(keys) <= columns), None)
    if keys is None:
        raise DataError(f"{source}: columns {sorted(columns)} do not match any RL layout; expected {LAYOUTS}.")
    text_key, gold_key = keys

    def convert(row, index):
        text, gold = row[text_key], _gold(row[gold_key])
        problem = None if isinstance(text, str) or text in (None, []) else chat_problem(text)
        if problem:
            raise DataError(f"{source}: row {index}: `{text_key}` is {problem}; expected a string or a list of "
                            "`{role, content}` messages.")
        if not text or gold is None or not gold.strip():
            raise DataError(f"{source}: row {index} has an empty `{text_key}` or gold answer (`{gold_key}`).")
        prompt = text if isinstance(text, list) else prompt_messages(text, system_prompt)
        return {"prompt": prompt, "answer": gold}

    drop = [c for c in dataset.column_names if c not in KEPT_COLUMNS]
    return dataset.map(convert, with_indices=True, remove_columns=drop)


def load_rl_dataset(name_or_path: str, *, split: str = "train", config: str | None = None,
                    system_prompt: str | None = SYSTEM_PROMPT, max_samples: int | None = None) -> Dataset:
    """Load and shape an RL prompt dataset (see module docstring); `max_samples` keeps the first rows."""
    dataset = load_raw_dataset(name_or_path, split=split, config=config, max_samples=max_samples)
    return to_rl_prompts(dataset, source=name_or_path, system_prompt=system_prompt)
