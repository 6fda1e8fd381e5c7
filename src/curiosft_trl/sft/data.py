"""SFT data: load a hub dataset or a local JSONL/JSON/parquet file, and shape it as TRL prompt-completion rows.

Every source ends as TRL's conversational prompt-completion format, so `SFTTrainer` puts the loss on the completion
tokens only (`completion_only_loss`). Accepted row layouts:

- `prompt` + `completion` (strings or message lists): used as they are;
- `prompt` + `target` (LUFFY / `Elliott/Openr1-Math-46k-8192`: message lists): `target` is the completion;
- `messages`: the last turn (an assistant turn) is the completion, the turns before it the prompt;
- `problem` + `solution` (+ `answer`), as in `../shared/data/*.jsonl` and the tiny task: the prompt is the system
  prompt and the problem; a solution without `</think>` is wrapped as `{solution}\n</think>\n\n\\boxed{answer}`.

In every layout a conversational completion that opens with `<think>` loses it (`prompts.strip_think_open`): the chat
template opens the block, so LUFFY's `"<think>\n..."` targets would otherwise train on two. String (non-chat)
completions are left as they are: no template is applied to them.
"""

from pathlib import Path

from datasets import Dataset, load_dataset

from ..errors import DataError
from ..prompts import SYSTEM_PROMPT, THINK_END, prompt_messages, strip_think_open, think_completion

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet"}
LAYOUTS = "`prompt`+`completion`, `prompt`+`target`, `messages`, or `problem`+`solution`"


def load_raw_dataset(
    name_or_path: str, split: str = "train", config: str | None = None, max_samples: int | None = None
) -> Dataset:
    """A local file or folder (JSONL, JSON, parquet; `.jsonl.gz` too), or a hub dataset id; the first
    `max_samples` rows if given."""
    dataset = _load(name_or_path, split, config)
    return dataset if max_samples is None else dataset.take(max_samples)


def _load(name_or_path: str, split: str, config: str | None) -> Dataset:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        builder = LOCAL_BUILDERS.get(path.suffix)
        if builder is None:
            raise DataError(f"{path}: unsupported file type `{path.suffix}`; expected one of {list(LOCAL_BUILDERS)}.")
        return load_dataset(builder, data_files=str(path), split="train")
    if path.is_dir():
        return load_dataset(str(path), name=config, split=split)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.endswith(tuple(LOCAL_BUILDERS)):
        raise DataError(f"dataset_name: {name_or_path} does not exist (a local path was expected).")
    try:
        return load_dataset(name_or_path, name=config, split=split)
    except Exception as e:  # datasets raises many types for an unreachable or unknown hub id
        raise DataError(f"dataset_name: cannot load `{name_or_path}` (split {split}) from the Hub: {e}") from e


def _content_is_empty(completion) -> bool:
    if isinstance(completion, str):
        return not completion.strip()
    return not completion or all(not str(m.get("content") or "").strip() for m in completion)


def _without_think_open(completion):
    """A conversational completion whose first turn does not open `<think>` (the template writes it)."""
    if isinstance(completion, str) or not completion or not isinstance(completion[0].get("content"), str):
        return completion
    first = {**completion[0], "content": strip_think_open(completion[0]["content"])}
    return [first, *completion[1:]]


def to_prompt_completion(dataset: Dataset, source: str, system_prompt: str | None = SYSTEM_PROMPT) -> Dataset:
    """Rows of any accepted layout -> `{"prompt": [...], "completion": [...]}`; errors name the source and row."""
    columns = set(dataset.column_names)

    if {"prompt", "completion"} <= columns:
        def convert(row):
            return {"prompt": row["prompt"], "completion": row["completion"]}
    elif {"prompt", "target"} <= columns:
        def convert(row):
            return {"prompt": row["prompt"], "completion": row["target"]}
    elif "messages" in columns:
        def convert(row):
            messages = row["messages"]
            if not messages or messages[-1].get("role") != "assistant":
                return {"prompt": messages, "completion": []}
            return {"prompt": messages[:-1], "completion": messages[-1:]}
    elif {"problem", "solution"} <= columns:
        def convert(row):
            solution = row["solution"] or ""
            if THINK_END not in solution and solution.strip() and row.get("answer"):
                solution = think_completion(solution, f"\\boxed{{{row['answer']}}}")
            return {
                "prompt": prompt_messages(row["problem"], system_prompt),
                "completion": [{"role": "assistant", "content": solution}],
            }
    else:
        raise DataError(f"{source}: columns {sorted(columns)} do not match any SFT layout; expected {LAYOUTS}.")

    def convert_checked(row, index):
        out = convert(row)
        out["completion"] = _without_think_open(out["completion"])
        if _content_is_empty(out["completion"]):
            raise DataError(f"{source}: row {index} has an empty completion (an assistant turn was expected).")
        return out

    return dataset.map(convert_checked, with_indices=True, remove_columns=dataset.column_names)


def load_sft_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    config: str | None = None,
    system_prompt: str | None = SYSTEM_PROMPT,
    max_samples: int | None = None,
) -> Dataset:
    """Load and shape an SFT dataset (see module docstring); `max_samples` keeps the first rows."""
    dataset = load_raw_dataset(name_or_path, split=split, config=config, max_samples=max_samples)
    return to_prompt_completion(dataset, source=name_or_path, system_prompt=system_prompt)
