"""Reading a dataset, for every stage: a hub id, or a local JSONL/JSON/parquet file checked before `datasets` reads it.

A local file is checked first (`check_local_file`), so an empty file, a byte that is not UTF-8, a line that is not one
JSON object or a file that is not parquet fails with one `DataError` naming the file and the line. File lines count
from 1, as editors do. Each stage's `data` module then shapes the rows (`sft.data`: prompt-completion rows for TRL's
`SFTTrainer`; `rl.data`: prompts and gold answers for `GRPOTrainer`).
"""

import gzip
import json
import zlib
from pathlib import Path

from datasets import Dataset, load_dataset

from .errors import DataError

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet"}
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
        try:
            return load_dataset(str(path), name=config, split=split)
        except Exception as e:  # an empty folder, unknown files, a missing split: `datasets` raises many types
            raise DataError(f"dataset_name: the folder {path} cannot be read as a dataset ({_root_cause(e)}); "
                            f"expected a {'/'.join(LOCAL_BUILDERS)} file, or a folder of them.") from None
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


def kind_of(value) -> str:
    """What a row holds where a string or a chat was expected, for a message: `a string`, `an array`, `null`, ..."""
    word = JSON_KINDS.get(type(value), type(value).__name__)
    return word if value is None else f"an {word}" if word[0] in "aeiou" else f"a {word}"


def chat_problem(value) -> str | None:
    """Why `value` is not a chat (a non-empty list of `{"role": str, "content": str}` turns), or None when it is."""
    if not isinstance(value, list):
        return kind_of(value)
    if not value:
        return "an empty list"
    for number, turn in enumerate(value):
        if not (isinstance(turn, dict) and isinstance(turn.get("role"), str) and isinstance(turn.get("content"), str)):
            return f"a list whose turn {number} is not a `{{role, content}}` pair of strings"
    return None
