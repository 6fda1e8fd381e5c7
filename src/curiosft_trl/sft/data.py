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

A local file is checked before `datasets` reads it (`check_local_file`), so an empty file, a byte that is not UTF-8, a
line that is not one JSON object or a file that is not parquet fails with one message naming the file and the line.
Rows are numbered from 0, as `dataset[i]` numbers them; file lines from 1, as editors do.
"""

import gzip
import json
import zlib
from pathlib import Path

from datasets import Dataset, load_dataset

from ..errors import DataError
from ..prompts import SYSTEM_PROMPT, THINK_END, prompt_messages, strip_think_open, think_completion

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet"}
LAYOUTS = "`prompt`+`completion`, `prompt`+`target`, `messages`, or `problem`+`solution`"
JSON_LINES = "one JSON object (a row) per line"
JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


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
        check_local_file(path)
        try:
            return load_dataset(builder, data_files=str(path), split="train")
        except Exception as e:  # what the check leaves to `datasets` (e.g. a column whose type changes between rows)
            raise DataError(f"{path}: cannot be read as a {builder} dataset ({_root_cause(e)}).") from e
    if path.is_dir():
        return load_dataset(str(path), name=config, split=split)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.endswith(tuple(LOCAL_BUILDERS)):
        raise DataError(f"dataset_name: {name_or_path} does not exist (a local path was expected).")
    try:
        return load_dataset(name_or_path, name=config, split=split)
    except Exception as e:  # datasets raises many types for an unreachable or unknown hub id
        raise DataError(f"dataset_name: cannot load `{name_or_path}` (split {split}) from the Hub: {e}") from e


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error (`datasets` wraps the reader's error in `DatasetGenerationError`)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")


def check_local_file(path: Path) -> None:
    """Fail with one `DataError` naming `path` (and the line) unless it holds at least one row `datasets` can read:

    - `.jsonl` (and `.jsonl.gz`): UTF-8, one JSON object per line (blank lines are skipped, as `datasets` does);
    - `.json` (and `.json.gz`): one JSON document (an array of objects, or one object) or JSON lines as above;
    - `.parquet`: a parquet file with at least one row (its footer is read, not its data).

    JSON lines are read one line at a time; a `.json` document is parsed whole, as `datasets` parses it."""
    if path.suffix == ".parquet":
        return _check_parquet(path)
    try:
        if Path(path.stem).suffix == ".json" or path.suffix == ".json":
            with _open_binary(path) as f:
                head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith((b"[", b"{")) and _check_json_document(path):
                return
        _check_json_lines(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: is not a readable gzip file ({e}).") from None


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _check_json_lines(path: Path) -> None:
    rows = number = 0
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {number} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                f"{e.start + 1}); expected UTF-8 text, {JSON_LINES}.") from None
            line = line.removeprefix("\ufeff") if number == 1 else line  # a byte-order mark, which `datasets` skips
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number} is not valid JSON ({e.msg} at column {e.colno}); "
                                f"expected {JSON_LINES}.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is a JSON {JSON_KINDS[type(row)]}, not an object; "
                                f"expected {JSON_LINES}.")
            rows += 1
    if rows == 0:
        empty = "is empty" if number == 0 else "has only blank lines"
        raise DataError(f"{path}: {empty}, no rows; expected {JSON_LINES}.")


def _check_json_document(path: Path) -> bool:
    """A `.json` file that is one JSON document: True when it holds rows, False when it is not one document (then it
    is read as JSON lines)."""
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise DataError(f"{path}: line {line} is not UTF-8 (byte 0x{data[e.start]:02x} at column {column}); "
                        "expected UTF-8 JSON text.") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # more than one value: JSON lines
            return False
        raise DataError(f"{path}: line {e.lineno} is not valid JSON ({e.msg} at column {e.colno}); expected an "
                        f"array of JSON objects (one per row) or {JSON_LINES}.") from None
    if isinstance(document, dict):
        return True
    for number, row in enumerate(document, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {number} of the JSON array is a {JSON_KINDS[type(row)]}, not an object; "
                            "expected an array of JSON objects, one per row.")
    if not document:
        raise DataError(f"{path}: has no rows (an empty JSON array); expected an array of JSON objects, one per row.")
    return True


def _check_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
        raise DataError(f"{path}: is not a parquet file ({_root_cause(e)}).") from None
    if rows == 0:
        raise DataError(f"{path}: has no rows; expected a parquet table with at least one row.")


def _kind(value) -> str:
    """What a row holds where a string or a chat was expected, for a message: `a string`, `an array`, `null`, ..."""
    word = JSON_KINDS.get(type(value), type(value).__name__)
    return word if value is None else f"an {word}" if word[0] in "aeiou" else f"a {word}"


def chat_problem(value) -> str | None:
    """Why `value` is not a chat (a non-empty list of `{"role": str, "content": str}` turns), or None when it is."""
    if not isinstance(value, list):
        return _kind(value)
    if not value:
        return "an empty list"
    for number, turn in enumerate(value):
        if not (isinstance(turn, dict) and isinstance(turn.get("role"), str) and isinstance(turn.get("content"), str)):
            return f"a list whose turn {number} is not a `{{role, content}}` pair of strings"
    return None


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
        read = ("prompt", "completion")

        def convert(row):
            return {"prompt": row["prompt"], "completion": row["completion"]}
    elif {"prompt", "target"} <= columns:
        read = ("prompt", "target")

        def convert(row):
            return {"prompt": row["prompt"], "completion": row["target"]}
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
            problem = (None if isinstance(value, str) else _kind(value)) if text else chat_problem(value)
            if problem:
                raise DataError(f"{source}: row {index}: `{column}` is {problem}; expected {expected}.")
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
    cut = lost = 0
    for length, start in zip(lengths, completion_starts, strict=True):
        if length <= max_length:
            continue
        cut += 1
        kept_end = max_length if truncation_mode == "keep_start" else length
        lost += kept_end <= start
    return cut, lost


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
    say = trainer.accelerator.print
    if cut == 0:
        say(f"All {len(lengths):,} training rows fit in max_length {args.max_length} tokens.")
        return
    kept = "first" if mode == "keep_start" else "last"
    no_loss_dropped = not args.packing and (trainer.completion_only_loss or args.assistant_only_loss)
    dropped = " (TRL leaves such rows out of training)" if no_loss_dropped else ""
    say(f"max_length {args.max_length} cuts {cut:,} of {len(lengths):,} training rows to their {kept} "
        f"{args.max_length} tokens; {lost:,} of them lost their whole completion{dropped}.")
