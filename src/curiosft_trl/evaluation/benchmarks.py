"""The benchmark registry: name -> where the data lives (hub id/split/revision, or a local JSONL file) and how it is graded.

A loader turns one benchmark into rows `{id, messages, gold, kind, num_choices}`:

- math (`kind="math"`): the user turn is the problem as written; the model answers in `\\boxed{}`.
- multiple choice (`kind="choice"`): the user turn is the question, the lettered choices (`A) ...`) and an
  instruction to answer with the boxed letter; `gold` is the letter.

The data comes from the hub, each dataset at a pinned commit (the default), or from a local folder (`data_dir`)
with one JSONL file per benchmark: `download_benchmark` (`make data`) writes the pinned hub copies there for
offline use, with `sources.json` recording where each file came from. Local files use one schema per kind: math
rows `{id, problem, answer}`, choice rows `{id, question, choices, answer}`. Gzipped files are read in memory
(GPQA asks that its examples never be written out in plain text). Hub datasets are mapped onto the same schema.
"""

from __future__ import annotations

import gzip
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import DataError
from ..files import atomic_write_bytes, atomic_write_text, file_sha256, read_jsonl
from ..prompts import prompt_messages

SOURCES_FILE = "sources.json"  # in a downloaded data_dir: benchmark -> {file, source, rows, sha256}
CHOICE_INSTRUCTION = "Answer with the letter of the correct option, in \\boxed{} (for example \\boxed{A})."


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its local file and hub source, its group (ID/OOD), kind and default samples per problem.

    `hub_id`/`hub_config`/`hub_split`/`hub_revision` name the hub copy used when `data_dir` is not given;
    `hub_layout` says how its rows map onto our schema (see `hub_row`).
    """

    name: str
    local_file: str
    group: Literal["id", "ood", "tiny"]
    kind: Literal["math", "choice"]
    n_samples: int = 8
    hub_id: str | None = None
    hub_split: str = "test"
    hub_revision: str | None = None
    hub_config: str | None = None
    hub_layout: Literal["problem", "question", "amc", "olympiad", "mmlu_pro", "arc", "gpqa"] = "problem"


# Hub revisions are the commits that public evaluation code pins for these datasets (the one most widely pinned
# where several exist); they could not be re-read here (no hub access), so results.json records the exact source.
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("aime24", "aime2024.jsonl", "id", "math", hub_id="HuggingFaceH4/aime_2024", hub_split="train",
                  hub_revision="2fe88a2f1091d5048c0f36abc874fb997b3dd99a"),
        Benchmark("aime25", "aime2025.jsonl", "id", "math", hub_id="math-ai/aime25",
                  hub_revision="563bb8404243c5f09de6ec262f2db674fe5bce9b"),
        # The paper's AMC: AMC 12 2022 + 2023, 83 problems (AI-MO's validation set, as in DeepScaleR and LUFFY).
        Benchmark("amc", "amc_2022_2023_83.jsonl", "id", "math", hub_id="AI-MO/aimo-validation-amc",
                  hub_split="train", hub_layout="amc", hub_revision="69d78a4a2c840e82d69af6bc742bda09005f6316"),
        # Its AMC 2023 half alone (40 problems, the "amc23" of Qwen2.5-Math and simpleRL); not in any suite.
        Benchmark("amc23", "amc2023.jsonl", "id", "math", hub_id="math-ai/amc23", hub_layout="question",
                  hub_revision="80815d37005feb82cd7f8fbc6901d5d3eff43057"),
        Benchmark("math500", "math500.jsonl", "id", "math", hub_id="HuggingFaceH4/MATH-500",
                  hub_revision="6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be"),
        Benchmark("minerva", "minerva_math.jsonl", "id", "math", hub_id="math-ai/minervamath", hub_layout="question",
                  hub_revision="ee46ddc498933b1977577953250ca5c66be64f96"),
        Benchmark("olympiadbench", "olympiadbench.jsonl", "id", "math", hub_id="math-ai/olympiadbench",
                  hub_layout="olympiad", hub_revision="4faaf1e6ec17d11a4218a9bf4c049ecaf954dd84"),
        # Gated on the hub (accept its terms, set HF_TOKEN). The hub copy stores the correct answer and three
        # distractors; `hub_row` shuffles them with a seed fixed by the record id.
        Benchmark("gpqa_diamond", "gpqa_diamond.jsonl.gz", "ood", "choice", hub_id="Idavidrein/gpqa",
                  hub_config="gpqa_diamond", hub_split="train", hub_layout="gpqa",
                  hub_revision="633f5ee89ab8ad4522a9f850766b73f62147ffdd"),
        Benchmark("arc_challenge", "arc_challenge_test.jsonl", "ood", "choice", hub_id="allenai/ai2_arc",
                  hub_config="ARC-Challenge", hub_layout="arc", hub_revision="210d026faf9955653af8916fad021475a3f00453"),
        Benchmark("mmlu_pro", "mmlu_pro_test.jsonl.gz", "ood", "choice", n_samples=1, hub_id="TIGER-Lab/MMLU-Pro",
                  hub_layout="mmlu_pro", hub_revision="b189ec765aa7ed75c8acfea42df31fdae71f97be"),
        # The tiny default's test split, written by `curiosft-tiny` (`ensure_tiny_data`); read from `tiny_data_dir`.
        Benchmark("tiny", "test.jsonl", "tiny", "math"),
    ]
}

# The paper's in-distribution (ID) and out-of-distribution (OOD) sets; `amc23` is registered but in no suite, so
# that the ID average is over the same six benchmarks as the paper's.
SUITES: dict[str, list[str]] = {
    "id": ["aime24", "aime25", "amc", "math500", "minerva", "olympiadbench"],
    "ood": ["gpqa_diamond", "arc_challenge", "mmlu_pro"],
    "tiny": ["tiny"],
}
SUITES["paper"] = SUITES["id"] + SUITES["ood"]


def resolve_benchmarks(names: list[str]) -> list[Benchmark]:
    """Benchmark and suite names (`paper`, `id`, `ood`, `tiny`) -> benchmarks, in order, without repeats."""
    out: list[str] = []
    for name in names:
        if name in SUITES:
            out += SUITES[name]
        elif name in BENCHMARKS:
            out.append(name)
        else:
            known = ", ".join(list(BENCHMARKS) + [f"{s} (suite)" for s in SUITES])
            raise DataError(f"unknown benchmark {name!r}; known: {known}.")
    return [BENCHMARKS[n] for n in dict.fromkeys(out)]


def choice_prompt(question: str, choices: list[str]) -> str:
    """`question`, the lettered choices one a line, and the boxed-letter instruction."""
    letters = string.ascii_uppercase
    if len(choices) > len(letters):
        raise DataError(f"{len(choices)} choices: at most {len(letters)} are supported.")
    lines = [f"{letters[i]}) {c}" for i, c in enumerate(choices)]
    return f"{question.strip()}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"


def local_path(benchmark: Benchmark, data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / benchmark.local_file


def hub_row(benchmark: Benchmark, row: dict, index: int) -> dict:
    """One hub row -> our schema (`{id, problem, answer}` or `{id, question, choices, answer}`), per `hub_layout`.

    Column names are those of the pinned revisions: MATH-500/AIME `problem`+`answer`; amc23/minerva
    `question`+`answer`; AMC-83 `problem`+`answer` with an `id` that restarts at 0 for 2023, so the row index
    names the row (`amc83-00`..`amc83-82`, the local file's ids); olympiadbench `question`+`final_answer` (a
    list); MMLU-Pro `question`+`options`+`answer` (a letter); ARC `question`+`choices{text,label}`+`answerKey`
    (a label, sometimes "1".."4"); GPQA `Question`+`Correct Answer`+`Incorrect Answer 1..3`.
    """
    layout = benchmark.hub_layout
    row_id = str(row.get("id", row.get("unique_id", row.get("question_id", row.get("Record ID", index)))))
    if layout == "amc":
        row_id = f"amc83-{index:02d}"
    if layout in ("problem", "question", "amc", "olympiad"):
        text = row["problem" if layout in ("problem", "amc") else "question"]
        answer = row["final_answer" if layout == "olympiad" else "answer"]
        if isinstance(answer, (list, tuple)):  # olympiadbench: one or more final answers
            answer = ", ".join(map(str, answer))
        return {"id": row_id, "problem": text, "answer": str(answer)}
    if layout == "mmlu_pro":
        return {"id": row_id, "question": row["question"], "choices": list(row["options"]), "answer": row["answer"]}
    if layout == "arc":
        labels = list(row["choices"]["label"])
        letter = string.ascii_uppercase[labels.index(row["answerKey"])]
        return {"id": row_id, "question": row["question"], "choices": list(row["choices"]["text"]), "answer": letter}
    if layout == "gpqa":
        correct = row["Correct Answer"].strip()
        choices = [correct] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
        random.Random(f"gpqa-{row_id}").shuffle(choices)
        letter = string.ascii_uppercase[choices.index(correct)]
        return {"id": row_id, "question": row["Question"].strip(), "choices": choices, "answer": letter}
    raise ValueError(f"{benchmark.name}: unknown hub_layout {layout!r}")


def hub_rows(benchmark: Benchmark) -> list[dict]:
    """The pinned hub copy's rows in our schema (`hub_row`); needs hub access (and HF_TOKEN for gated GPQA)."""
    if benchmark.hub_id is None:
        raise DataError(f"{benchmark.name}: no hub copy is registered; give `data_dir` with {benchmark.local_file}.")
    from datasets import load_dataset

    ds = load_dataset(benchmark.hub_id, benchmark.hub_config, split=benchmark.hub_split,
                      revision=benchmark.hub_revision)
    try:
        return [hub_row(benchmark, r, i) for i, r in enumerate(ds)]
    except (KeyError, ValueError) as e:  # the hub copy changed shape: name it rather than fail deep in a prompt
        raise DataError(f"{hub_source(benchmark)}: rows do not have the expected columns ({e!r}).") from e


def hub_source(benchmark: Benchmark) -> str:
    """`hf://id[/config]@revision:split`, as recorded in results.json."""
    config = f"/{benchmark.hub_config}" if benchmark.hub_config else ""
    return f"hf://{benchmark.hub_id}{config}@{benchmark.hub_revision or 'main'}:{benchmark.hub_split}"


def read_sources(data_dir: str | Path) -> dict:
    """`data_dir/sources.json` (written by `download_benchmark`), or {} when the folder has none."""
    path = Path(data_dir).expanduser() / SOURCES_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg}); delete it and run `make data` again.") from e


def load_benchmark(
    benchmark: Benchmark,
    data_dir: str | Path | None,
    system_prompt: str | None,
    max_problems: int | None = None,
) -> tuple[list[dict], str]:
    """Rows `{id, messages, gold, kind, num_choices}` and the data's source (file path + sha256, or hub id@revision).

    `data_dir=None` loads the hub copy. A missing local file is an error naming the file (never a silent hub
    fallback: the numbers must say which data they came from). A file written by `download_benchmark` also names
    the hub revision it came from.
    """
    if data_dir is not None:
        path = local_path(benchmark, data_dir)
        if not path.is_file():
            hint = " Run `make tiny` to write the tiny task." if benchmark.group == "tiny" else \
                f" Run `make data DATA_DIR={data_dir}` to download it, or set `data_dir: null` to read the hub copy."
            raise DataError(f"{benchmark.name}: data file {path} not found.{hint}")
        sha = file_sha256(path)
        raw, source = read_jsonl(path), f"{path} sha256:{sha}"
        entry = read_sources(data_dir).get(benchmark.name, {})
        if entry.get("sha256") == sha:
            source += f" from {entry['source']}"
    else:
        raw, source = hub_rows(benchmark), hub_source(benchmark)
    return prompt_rows(benchmark, raw[:max_problems] if max_problems else raw, system_prompt), source


def prompt_rows(benchmark: Benchmark, raw: list[dict], system_prompt: str | None) -> list[dict]:
    """Rows in our schema -> `{id, messages, gold, kind, num_choices}`, checking each row and the ids' uniqueness."""
    rows = []
    for i, r in enumerate(raw):
        where = f"{benchmark.name} row {i}"
        if "answer" not in r or str(r["answer"]).strip() == "":
            raise DataError(f"{where}: no `answer`.")
        if benchmark.kind == "choice":
            if "question" not in r or not isinstance(r.get("choices"), list):
                raise DataError(f"{where}: multiple-choice rows need `question` and a list `choices`.")
            text, num_choices = choice_prompt(r["question"], r["choices"]), len(r["choices"])
        else:
            if "problem" not in r:
                raise DataError(f"{where}: math rows need `problem`.")
            text, num_choices = r["problem"], None
        rows.append(
            {
                "id": str(r.get("id", i)),
                "messages": prompt_messages(text, system_prompt),
                "gold": str(r["answer"]),
                "kind": benchmark.kind,
                "num_choices": num_choices,
            }
        )
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{benchmark.name}: row ids are not unique (the generation cache is keyed on them).")
    return rows


def download_benchmark(benchmark: Benchmark, data_dir: str | Path, force: bool = False) -> str:
    """Write `benchmark`'s pinned hub copy to `data_dir/<local_file>`, the file `load_benchmark(benchmark,
    data_dir)` reads, and record its source in `data_dir/sources.json`; returns a one-line summary.

    Rows are checked before anything is written, and every file is replaced atomically (a killed download leaves
    the old file or the new one). A `.gz` file is gzipped in memory (GPQA is never written in plain text). A file
    already downloaded from the same revision, unchanged since, is kept unless `force`.
    """
    data_dir = Path(data_dir).expanduser()
    path, source = local_path(benchmark, data_dir), hub_source(benchmark)
    entry = read_sources(data_dir).get(benchmark.name, {})
    if not force and entry.get("source") == source and path.is_file() and file_sha256(path) == entry.get("sha256"):
        return f"{benchmark.name}: {path} is up to date ({entry['rows']} rows from {source})"
    rows = hub_rows(benchmark)
    prompt_rows(benchmark, rows, None)
    data = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows).encode()
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    sources = read_sources(data_dir)
    sources[benchmark.name] = {"file": benchmark.local_file, "source": source, "rows": len(rows),
                               "sha256": file_sha256(path)}
    atomic_write_text(data_dir / SOURCES_FILE, json.dumps(sources, indent=2, sort_keys=True) + "\n")
    return f"{benchmark.name}: {len(rows)} rows from {source} -> {path}"
