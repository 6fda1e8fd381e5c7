"""SFT data: load a hub dataset or a local JSONL/JSON/parquet file, and shape it as TRL prompt-completion rows.

Every source ends as TRL's conversational prompt-completion format, so `SFTTrainer` puts the loss on the completion
tokens only (`completion_only_loss`). Accepted row layouts:

- `prompt` + `completion` (strings or message lists): used as they are;
- `prompt` + `target` (LUFFY / `Elliott/Openr1-Math-46k-8192`: message lists): `target` is the completion;
- `messages`: the last turn (an assistant turn) is the completion, the turns before it the prompt;
- `problem` + `solution` (+ `answer`), as in MATH-style JSONL files and the tiny task: the prompt is the system
  prompt and the problem; a solution without `</think>` is wrapped as `{solution}\n</think>\n\n\\boxed{answer}`.

In every layout a conversational completion that opens with `<think>` loses it (`prompts.strip_think_open`): the chat
template opens the block, so LUFFY's `"<think>\n..."` targets would otherwise train on two. String (non-chat)
completions are left as they are: no template is applied to them.

Reading the source (a hub id, or a local file checked before `datasets` reads it) is `curiosft_trl.readers`, shared with
the RL stage. Rows are numbered from 0, as `dataset[i]` numbers them.
"""

from datasets import Dataset

from ..errors import DataError
from ..prompts import SYSTEM_PROMPT, THINK_END, prompt_messages, strip_think_open, think_completion
from ..readers import chat_problem, kind_of, load_raw_dataset

LAYOUTS = "`prompt`+`completion`, `prompt`+`target`, `messages`, or `problem`+`solution`"


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

    if {"prompt", "completion"} <= columns or {"prompt", "target"} <= columns:
        read = ("prompt", "completion" if "completion" in columns else "target")

        def convert(row):
            return {"prompt": row["prompt"], "completion": row[read[1]]}
    elif "messages" in columns:
        read = ("messages",)

        def convert(row):
            messages = row["messages"]
            if messages[-1]["role"] != "assistant":
                return {"prompt": messages, "completion": []}
            return {"prompt": messages[:-1], "completion": messages[-1:]}
    elif {"problem", "solution"} <= columns:
        read = ("problem", "solution")

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

    text = read[0] == "problem" or (read[0] == "prompt" and len(dataset) > 0 and isinstance(dataset[0]["prompt"], str))
    expected = "a string" if text else "a list of `{role, content}` messages"
    if read[0] == "prompt":
        expected += ", as row 0's `prompt` is"  # TRL picks string or chat handling from the first row

    def convert_checked(row, index):
        for column in read:
            value = row[column]
            if column != read[0] and value in (None, "", []):  # no completion at all: said below
                continue
            problem = (None if isinstance(value, str) else kind_of(value)) if text else chat_problem(value)
            if problem:
                raise DataError(f"{source}: row {index}: `{column}` is {problem}; expected {expected}.")
        out = convert(row)
        out["completion"] = _without_think_open(out["completion"])
        if _content_is_empty(out["completion"]):
            raise DataError(f"{source}: row {index} has an empty completion (an assistant turn was expected).")
        if not text and not any(m.get("role") == "user" for m in out["prompt"]):
            raise DataError(f"{source}: row {index} has no user turn before its completion; expected a prompt with "
                            "the problem (a `user` message) before the assistant's answer.")
        return out

    return dataset.map(convert_checked, with_indices=True, remove_columns=dataset.column_names)


def load_sft_dataset(name_or_path: str, *, split: str = "train", config: str | None = None,
                     system_prompt: str | None = SYSTEM_PROMPT, max_samples: int | None = None) -> Dataset:
    """Load and shape an SFT dataset (see module docstring); `max_samples` keeps the first rows."""
    dataset = load_raw_dataset(name_or_path, split=split, config=config, max_samples=max_samples)
    return to_prompt_completion(dataset, source=name_or_path, system_prompt=system_prompt)


def token_lengths(dataset: Dataset, tokenizer, chat_template: str | None = None,
                  batch_size: int = 256) -> tuple[list[int], list[int]]:
    """Each prompt-completion row's length in tokens and where its completion starts, as TRL's `SFTTrainer`
    tokenizes it before truncating (`SFTTrainer._prepare_dataset`): a chat row is the chat template's rendering of
    `prompt + completion`, and its completion starts where that diverges from the rendering of `prompt` with the
    generation prompt; a string row is tokenized as it is, its completion ending in EOS. Rows are tokenized in
    batches (one call to the fast tokenizer per `batch_size` rows).

    `chat_template` is the trainer's override (`SFTTrainer.chat_template`; None: the tokenizer's own)."""
    from trl.data_utils import common_prefix_length  # here: TRL imports transformers, which loading data does not need

    def render(conversations, **kwargs):  # TRL's `_tokenize` of a chat, for a batch of chats
        return tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True,
                                             chat_template=chat_template, **kwargs)["input_ids"]

    eos = tokenizer.eos_token or ""
    lengths, starts = [], []
    for first in range(0, len(dataset), batch_size):
        rows = dataset[first:first + batch_size]
        prompts, completions = rows["prompt"], rows["completion"]
        if isinstance(prompts[0], list):
            prompt_ids = render(prompts, add_generation_prompt=True)
            full_ids = render([p + c for p, c in zip(prompts, completions, strict=True)])
        else:  # TRL's `add_eos`, then the tokenizer
            prompt_ids = tokenizer(prompts)["input_ids"]
            full_ids = tokenizer([p + (c if c.endswith(eos) else c + eos)
                                  for p, c in zip(prompts, completions, strict=True)])["input_ids"]
        for prompt, full in zip(prompt_ids, full_ids, strict=True):
            lengths.append(len(full))
            starts.append(common_prefix_length(prompt, full))
    return lengths, starts


def truncation_counts(lengths: list[int], completion_starts: list[int], max_length: int,
                      truncation_mode: str = "keep_start") -> tuple[int, int]:
    """How many rows `max_length` cuts, and how many of those keep no completion token: `(cut, lost)`.

    A row of `length` tokens whose completion starts at token `start` is cut when `length > max_length`; TRL keeps
    tokens `[0, max_length)` (`keep_start`) or the last `max_length` (`keep_end`), and the row keeps no completion
    token when that span ends at or before `start`."""
    cut = [(length, start) for length, start in zip(lengths, completion_starts, strict=True) if length > max_length]
    lost = sum((max_length if truncation_mode == "keep_start" else length) <= start for length, start in cut)
    return len(cut), lost


def report_truncation(trainer, train_dataset, training_args) -> None:
    """Say once how many training rows `max_length` cuts and how many lose their whole completion: TRL cuts them
    silently while it prepares the dataset (`SFTTrainer._prepare_dataset`, after tokenizing) and drops a row left with
    no loss token; with packing, the `bfd` strategy cuts rows to their first `max_length` tokens, the others split
    them instead. The rows are tokenized once more for this (batched, on the main process only)."""
    args = training_args
    truncates = args.max_length is not None and (not args.packing or args.packing_strategy == "bfd")
    if not truncates or not trainer.accelerator.is_main_process:
        return
    lengths, starts = token_lengths(train_dataset, trainer.processing_class, trainer.chat_template)
    mode = "keep_start" if args.packing else args.truncation_mode
    cut, lost = truncation_counts(lengths, starts, args.max_length, mode)
    if lost == len(lengths):
        raise DataError(f"max_length {args.max_length} cuts every one of the {len(lengths):,} training rows before its "
                        f"completion starts, so nothing would be trained; the shortest prompt takes {min(starts):,} "
                        "tokens: raise max_length.")
    say = trainer.accelerator.print
    if cut == 0:
        say(f"All {len(lengths):,} training rows fit in max_length {args.max_length} tokens.")
        return
    kept = "first" if mode == "keep_start" else "last"
    no_loss_dropped = not args.packing and (trainer.completion_only_loss or args.assistant_only_loss)
    dropped = " (TRL leaves such rows out of training)" if no_loss_dropped else ""
    say(f"max_length {args.max_length} cuts {cut:,} of {len(lengths):,} training rows to their {kept} "
        f"{args.max_length} tokens; {lost:,} of them lost their whole completion{dropped}.")
