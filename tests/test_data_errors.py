"""Bad data files and output folders fail with one `error:` line naming the file and the line (or row) and what was
expected, before any model loads; the rows `max_length` cuts are counted once, at the start of SFT."""

import gzip
import json
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curiosft_trl.cli.rl import main as rl_main
from curiosft_trl.cli.sft import main as sft_main
from curiosft_trl.errors import DataError, RecipeError
from curiosft_trl.rl.data import load_rl_dataset
from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset, token_lengths, truncation_counts

ROW = {"problem": "1+1", "solution": "1 and 1 make 2.", "answer": "2"}  # a row both SFT and RL accept
GOOD = (json.dumps(ROW) + "\n").encode()
LINES = "expected one JSON object (a row) per line."
LOADERS = [load_sft_dataset, load_rl_dataset]


def empty_parquet(path):
    pq.write_table(pa.table({"problem": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)


# (file name, its bytes or a writer, the message after "{path}: ")
BAD_FILES = [
    ("empty.jsonl", b"", f"is empty, no rows; {LINES}"),
    ("blank.jsonl", b"\n   \n", f"has only blank lines, no rows; {LINES}"),
    ("latin1.jsonl", GOOD + b'{"problem": "caf\xe9", "solution": "x", "answer": "1"}\n',
     "line 2 is not UTF-8 (byte 0xe9 at column 17); expected UTF-8 text, one JSON object (a row) per line."),
    ("malformed.jsonl", GOOD + GOOD + b'{"problem": "x", "answer": }\n',
     f"line 3 is not valid JSON (Expecting value at column 28); {LINES}"),
    ("malformed.jsonl.gz", gzip.compress(GOOD + b"\n" + b'{"problem": "x" "answer": "1"}\n'),
     f"line 3 is not valid JSON (Expecting ',' delimiter at column 17); {LINES}"),
    ("not_an_object.jsonl", GOOD + b'["1+1", "2"]\n', f"line 2 is a JSON array, not an object; {LINES}"),
    ("scalar.jsonl", b'"1+1"\n', f"line 1 is a JSON string, not an object; {LINES}"),
    ("rows.json", ("[" + json.dumps(ROW) + ', "2"]').encode(),
     "item 2 of the JSON array is a string, not an object; expected an array of JSON objects, one per row."),
    ("broken.json", ("[" + json.dumps(ROW) + ",\n" + json.dumps(ROW)[:-1] + "]").encode(),
     f"line 2 is not valid JSON (Expecting ',' delimiter at column {len(json.dumps(ROW))}); expected an array of "
     "JSON objects (one per row) or one JSON object (a row) per line."),  # the `]` where `}` was expected
    ("plain.jsonl.gz", GOOD, "is not a readable gzip file (Not a gzipped file (b'{\"'))."),
    ("text.parquet", GOOD, "is not a parquet file (Parquet magic bytes not found in footer"),
    ("empty.parquet", empty_parquet, "has no rows; expected a parquet table with at least one row."),
]


@pytest.mark.parametrize("load", LOADERS, ids=["sft", "rl"])
@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_a_bad_file_is_one_error_naming_the_file_and_line(name, content, message, load, tmp_path):
    path = tmp_path / name
    content(path) if callable(content) else path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load(str(path))
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)
    assert "\n" not in str(error.value)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("rows, message", [
    ([{"messages": "hello"}], "row 0: `messages` is a string; expected a list of `{role, content}` messages."),
    ([{"messages": [{"role": "user"}]}],
     "row 0: `messages` is a list whose turn 0 is not a `{role, content}` pair of strings; expected a list of "
     "`{role, content}` messages."),
    ([{"prompt": "1+1", "completion": "It is 2."},
      {"prompt": "2+2", "completion": [{"role": "assistant", "content": "4"}]}],
     "row 1: `completion` is an array; expected a string, as row 0's `prompt` is."),
    ([ROW, {**ROW, "problem": 7}], "row 1: `problem` is a number; expected a string."),
], ids=["messages-string", "turn-without-content", "string-then-chat", "problem-number"])
def test_an_sft_row_of_the_wrong_type_names_the_row(rows, message, tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError) as error:
        load_sft_dataset(path)
    assert str(error.value) == f"{path}: {message}"


def test_an_rl_prompt_of_the_wrong_type_names_the_row(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", [{"prompt": "1+1", "answer": "2"}, {"prompt": 5, "answer": "5"}])
    with pytest.raises(DataError) as error:
        load_rl_dataset(path)
    assert str(error.value) == f"{path}: row 1: `prompt` is a number; expected a string or a list of `{{role, " \
                               "content}` messages."


@pytest.mark.parametrize("load, stage", [(load_sft_dataset, "SFT"), (load_rl_dataset, "RL")], ids=["sft", "rl"])
def test_a_file_with_no_accepted_layout_names_its_columns(load, stage, tmp_path):
    path = write_rows(tmp_path / "qa.jsonl", [{"question": "1+1", "response": "2"}])
    with pytest.raises(DataError, match=rf"^{re.escape(path)}: columns \['question', 'response'\] do not match any "
                                        rf"{stage} layout; expected "):
        load(path)


def test_files_the_checks_accept_still_load(tmp_path):
    """The checks refuse nothing `datasets` reads into rows: blank lines, a byte-order mark, gzip, a JSON array, a
    one-object JSON document, parquet."""
    files = {
        "blank_lines.jsonl": b"\n" + GOOD + b"  \n" + GOOD,
        "bom.jsonl": b"\xef\xbb\xbf" + GOOD + GOOD,
        "rows.jsonl.gz": gzip.compress(GOOD + GOOD),
        "array.json": json.dumps([ROW, ROW], indent=2).encode(),
        "lines.json": GOOD + GOOD,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    pq.write_table(pa.Table.from_pylist([ROW, ROW]), tmp_path / "rows.parquet")
    for name in [*files, "rows.parquet"]:
        assert len(load_sft_dataset(str(tmp_path / name))) == 2, name
        assert load_rl_dataset(str(tmp_path / name))[1]["answer"] == "2", name


def sft_recipe(tmp_path, model_dir, data_file, **fields):
    recipe = dict(model_name_or_path=str(model_dir), dataset_name=str(data_file), output_dir=str(tmp_path / "out"),
                  max_steps=1, per_device_train_batch_size=2, report_to="none", use_cpu=True, sft_loss="nll")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, **fields}))
    return path


def run_sft(recipe) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curiosft_trl.cli.sft", "--config", str(recipe)],
                          capture_output=True, text=True, timeout=600)


def test_the_cli_prints_one_error_line_and_writes_nothing(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes(GOOD + b'{"problem": "x", "answer": }\n')
    result = run_sft(sft_recipe(tmp_path, tiny_model_dir, data))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {data}: line 2 is not valid JSON (Expecting value at column 28); "
                                     f"{LINES}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("main", [sft_main, rl_main], ids=["sft", "rl"])
def test_an_output_dir_that_is_a_file_is_refused_first(main, tiny_sft_file, tmp_path):
    """Refused before the model path is even looked at (this one does not exist)."""
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for output_dir, where in [(taken, "is a file"), (taken / "run", f"is inside {taken}, which is a file")]:
        with pytest.raises(RecipeError) as error:
            main(["--model_name_or_path", str(tmp_path / "no-model"), "--dataset_name", str(tiny_sft_file),
                  "--output_dir", str(output_dir), "--use_cpu", "true"])
        assert str(error.value) == (f"output_dir: {output_dir} {where}; expected a folder for checkpoints and the "
                                    "final model (a new path, or the folder of a run to resume).")
    assert taken.read_text() == "a file"


@pytest.mark.parametrize("lengths, starts, max_length, mode, expected", [
    ([10, 11, 20, 20], [3, 3, 9, 10], 10, "keep_start", (3, 1)),  # 10 fits; 20 with its completion at token 10: lost
    ([10, 11, 20, 20], [3, 3, 9, 10], 10, "keep_end", (3, 0)),  # the end is kept: so is every completion
    ([5, 6], [2, 6], 4, "keep_end", (2, 1)),  # ... unless the completion is empty
    ([100, 200], [50, 60], 200, "keep_start", (0, 0)),  # a row exactly max_length long is not cut
])
def test_truncation_counts(lengths, starts, max_length, mode, expected):
    assert truncation_counts(lengths, starts, max_length, mode) == expected


def trl_prepared(model_dir, data_file, tmp_path, max_length):
    """TRL's own tokenized training rows (`SFTTrainer._prepare_dataset`) as the CLI's defaults build them."""
    from curiosft_trl.sft.trainer import CurioSFTTrainer

    args = CurioSFTConfig(output_dir=str(tmp_path / "probe"), sft_loss="nll", use_cpu=True, report_to="none",
                          max_length=max_length)
    trainer = CurioSFTTrainer(model=str(model_dir), args=args, train_dataset=load_sft_dataset(str(data_file)))
    return trainer


def lengths_and_starts(prepared) -> list[tuple[int, int]]:
    """(length, first loss token) of each prepared row, in a fixed order."""
    return sorted((len(row["input_ids"]), next(i for i, label in enumerate(row["labels"]) if label != -100))
                  for row in prepared)


@pytest.mark.parametrize("rows", [
    [ROW, {**ROW, "problem": "Add " + " + ".join(map(str, range(30)))}],
    [{"prompt": "1+1=", "completion": "2"}, {"prompt": "Add 1 and 1.", "completion": " The sum is 2."}],
], ids=["chat", "strings"])
def test_token_lengths_are_trls(rows, tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl", rows)
    trainer = trl_prepared(tiny_model_dir, data, tmp_path, max_length=None)
    lengths, starts = token_lengths(load_sft_dataset(data), trainer.processing_class, trainer.chat_template)
    assert sorted(zip(lengths, starts)) == lengths_and_starts(trainer.train_dataset)


def test_sft_reports_the_rows_max_length_cuts(tiny_model_dir, tmp_path):
    long_problem = "Add " + " + ".join(map(str, range(60)))  # pushes the completion past max_length
    long_solution = "Count: " + " ".join(map(str, range(60)))  # cut, but its completion starts inside max_length
    rows = [ROW, {**ROW, "problem": "2+2", "answer": "4"}, {**ROW, "problem": long_problem},
            {**ROW, "solution": long_solution}, {**ROW, "problem": long_problem + " + 1"},
            {**ROW, "solution": long_solution + " 60"}]
    data = write_rows(tmp_path / "rows.jsonl", rows)
    max_length = 300
    full = lengths_and_starts(trl_prepared(tiny_model_dir, data, tmp_path, max_length=None).train_dataset)
    cut = sum(length > max_length for length, _ in full)
    lost = sum(length > max_length and start >= max_length for length, start in full)
    assert 0 < lost < cut < len(rows)  # the data has rows that fit, rows cut, and rows cut before their completion
    # TRL drops the rows that keep no completion token
    assert len(trl_prepared(tiny_model_dir, data, tmp_path, max_length).train_dataset) == len(rows) - lost

    result = run_sft(sft_recipe(tmp_path, tiny_model_dir, data, max_length=max_length))
    assert result.returncode == 0, result.stderr[-2000:]
    reports = [line for line in result.stdout.splitlines() if "max_length" in line]
    assert reports == [f"max_length {max_length} cuts {cut} of {len(rows)} training rows to their first {max_length} "
                       f"tokens; {lost} of them lost their whole completion (TRL leaves such rows out of training)."]
