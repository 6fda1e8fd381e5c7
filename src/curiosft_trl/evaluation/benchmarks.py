"""The benchmark registry: name -> where the data lives (hub id/split/revision, or a local JSONL file) and how it is
graded.

The registry is data: `benchmarks.yaml` beside this file (shown as `eval/benchmarks.yaml`) holds every built-in
benchmark and the suites (`paper` = `id` + `ood`, `tiny`); files of the same schema named by the eval recipe's
`benchmark_files` add a user's own (`read_registry`). A loader turns one benchmark into rows
`{id, messages, gold, kind, num_choices}`:

- math (`kind="math"`): the user turn is the problem as written; the model answers in `\\boxed{}`.
- multiple choice (`kind="choice"`): the user turn is the question, the lettered choices (`A) ...`) and an
  instruction to answer with the boxed letter; `gold` is the letter.

The data comes from the hub, each dataset at a pinned commit (the default), or from a local folder (`data_dir`)
with one JSONL file per benchmark: `download_benchmark` (`make data`) writes the pinned hub copies there for
offline use, with `sources.json` recording where each file came from. Local files use one schema per kind: math
rows `{id, problem, answer}`, choice rows `{id, question, choices, answer}`; a benchmark whose rows name these
otherwise says which column holds each (`columns`). Gzipped files are read in memory (GPQA asks that its examples
never be written out in plain text). Hub datasets are mapped onto the same schema (`hub_row`).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import string
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from ..errors import DataError
from ..files import atomic_write_bytes, atomic_write_text, file_sha256, json_line, read_jsonl
from ..prompts import prompt_messages
from ..recipe import load_yaml_data

REGISTRY_FILE = Path(__file__).with_name("benchmarks.yaml")
SOURCES_FILE = "sources.json"  # in a downloaded data_dir: benchmark -> {file, source, rows, sha256}
CHOICE_INSTRUCTION = "Answer with the letter of the correct option, in \\boxed{} (for example \\boxed{A})."
HUB_LAYOUTS = ("problem", "question", "amc", "olympiad", "mmlu_pro", "arc", "gpqa")
# Our row fields per kind, the required ones first: what `columns` may map
FIELDS = {"math": ("problem", "answer", "id"), "choice": ("question", "choices", "answer", "id")}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: one entry of a registry file, whose keys the header of benchmarks.yaml describes."""

    name: str
    local_file: str
    group: str  # "id", "ood", or a group of one's own ("tiny", ...): the report averages avg@n per group
    kind: Literal["math", "choice"]
    n_samples: int = 8
    hub_id: str | None = None
    hub_split: str = "test"
    hub_revision: str | None = None
    hub_config: str | None = None
    hub_layout: Literal["problem", "question", "amc", "olympiad", "mmlu_pro", "arc", "gpqa"] = "problem"
    columns: dict[str, str] | None = field(default=None, hash=False)
    data_dir: str | None = None
    made_by: str | None = None


@dataclass
class Registry:
    """Benchmarks by name and suites (name -> benchmark names, in order), as read from one or more registry files."""

    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    suites: dict[str, list[str]] = field(default_factory=dict)


def read_registry(path: str | Path, base: Registry | None = None, builtin: bool = False) -> Registry:
    """The benchmarks and suites of the registry file `path`, added to those of `base` (which is not changed).

    A bad entry is one `DataError` naming the file, the entry and the key. In a user's file (`builtin=False`) a
    benchmark with only a local file reads it relative to that file, and a name may not redefine one in `base`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark_files: {path} is not a file; expected a benchmark registry YAML "
                        f"(like {REGISTRY_FILE.name}).")
    raw = load_yaml_data(path, "benchmark registry", DataError)  # bounded like a recipe, no key given twice
    if not isinstance(raw, dict) or not set(raw) <= {"benchmarks", "suites"} or not (raw.get("benchmarks")
                                                                                   or raw.get("suites")):
        raise DataError(f"{path}: expected a mapping with `benchmarks:` (name: entry) and optionally `suites:` "
                        "(name: [benchmark or suite, ...]).")
    registry = Registry(dict(base.benchmarks), dict(base.suites)) if base else Registry()
    entries, suites = raw.get("benchmarks") or {}, raw.get("suites") or {}
    if not isinstance(entries, dict) or not isinstance(suites, dict):
        raise DataError(f"{path}: `benchmarks` and `suites` must be mappings of name: value.")
    for name, entry in entries.items():
        _check_new_name(path, "benchmarks", name, registry)
        registry.benchmarks[name] = _benchmark(path, str(name), entry, builtin)
    for name, members in suites.items():
        if members != [name]:  # a suite of one benchmark may carry its name (`tiny: [tiny]`)
            _check_new_name(path, "suites", name, registry)
        if not isinstance(members, list) or not members:
            raise DataError(f"{path}: suites.{name}: expected a list of benchmark or suite names, got {members!r}.")
        registry.suites[name] = _expand(members, registry, lambda member: DataError(
            f"{path}: suites.{name}: {member!r} is not a benchmark or a suite defined before it."))
    return registry


def _expand(names: list[str], registry: Registry, unknown) -> list[str]:
    """Benchmark and suite names -> benchmark names, in order, without repeats; `unknown(name)` is the error to raise
    for a name that is neither."""
    out: list[str] = []
    for name in names:
        if name in registry.suites:
            out += registry.suites[name]
        elif name in registry.benchmarks:
            out.append(name)
        else:
            raise unknown(name)
    return list(dict.fromkeys(out))


def _check_new_name(path: Path, section: str, name, registry: Registry) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise DataError(f"{path}: {section}.{name}: a name is letters, digits, `_`, `.` and `-` (it names cache "
                        "files).")
    if name in registry.benchmarks or name in registry.suites:
        kind = "benchmark" if name in registry.benchmarks else "suite"
        raise DataError(f"{path}: {section}.{name}: already a {kind}; choose another name.")


def _benchmark(path: Path, name: str, entry, builtin: bool) -> Benchmark:
    """One registry entry -> a `Benchmark`, every key checked."""
    where = f"{path}: benchmarks.{name}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping of key: value, got {entry!r}.")
    known = {f.name for f in fields(Benchmark)} - {"name"} - (set() if builtin else {"data_dir"})
    if unknown := sorted(set(map(str, entry)) - known):
        hint = " (a local_file is read relative to this file)" if "data_dir" in unknown else ""
        raise DataError(f"{where}: unknown key {unknown[0]!r}{hint}; expected some of {', '.join(sorted(known))}.")

    def text(key: str, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}.{key}: expected a non-empty string, got {value!r}.")
        return value

    kind, group = text("kind", required=True), text("group", required=True)
    if kind not in FIELDS:
        raise DataError(f"{where}.kind: expected `math` or `choice`, got {kind!r}.")
    n_samples = entry.get("n_samples", 8)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise DataError(f"{where}.n_samples: expected a positive integer, got {n_samples!r}.")
    hub = {key: text(key) for key in ("hub_id", "hub_split", "hub_revision", "hub_config", "hub_layout")}
    if hub["hub_id"] is None and any(hub.values()):
        key = next(k for k, v in hub.items() if v)
        raise DataError(f"{where}.{key}: only with `hub_id` (the hub dataset it describes).")
    if hub["hub_layout"] not in (None, *HUB_LAYOUTS):
        raise DataError(f"{where}.hub_layout: expected one of {', '.join(HUB_LAYOUTS)}, got {hub['hub_layout']!r}.")
    columns = None if entry.get("columns") is None else _columns(where, kind, entry["columns"])
    if columns is not None and hub["hub_layout"]:
        raise DataError(f"{where}: give `columns` or `hub_layout`, not both.")
    local_file, data_dir = text("local_file"), text("data_dir")
    if local_file is None and hub["hub_id"] is None:
        raise DataError(f"{where}: expected `local_file` (a JSONL file) or `hub_id` (a hub dataset), or both.")
    if not builtin and hub["hub_id"] is None:  # a user's local benchmark: its file sits beside the registry file
        data_dir = str(path.parent.resolve())
    return Benchmark(name, local_file or f"{name}.jsonl", group, kind, n_samples,
                     **{k: v for k, v in hub.items() if v is not None}, columns=columns, data_dir=data_dir,
                     made_by=text("made_by"))


def _columns(where: str, kind: str, columns) -> dict[str, str]:
    required = FIELDS[kind][:-1]
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise DataError(f"{where}.columns: expected a mapping of our field: its column name, got {columns!r}.")
    bad = sorted(set(columns) - set(FIELDS[kind]))
    missing = [f for f in required if f not in columns]
    if bad or missing:
        raise DataError(f"{where}.columns: {kind} rows map {', '.join(required)} (and optionally id); "
                        f"{f'unknown field {bad[0]!r}' if bad else f'{missing[0]!r} is missing'}.")
    return dict(columns)


BUILTIN = read_registry(REGISTRY_FILE, builtin=True)
BENCHMARKS: dict[str, Benchmark] = BUILTIN.benchmarks
SUITES: dict[str, list[str]] = BUILTIN.suites


def load_registry(benchmark_files: list[str] | tuple[str, ...] = ()) -> Registry:
    """The built-in registry plus the user's registry files, in order."""
    registry = BUILTIN
    for path in benchmark_files:
        registry = read_registry(path, registry)
    return registry


def resolve_benchmarks(names: list[str], benchmark_files: list[str] | tuple[str, ...] = ()) -> list[Benchmark]:
    """Benchmark and suite names (`paper`, `id`, `ood`, `tiny`, and those of `benchmark_files`) -> benchmarks, in
    order, without repeats."""
    registry = load_registry(benchmark_files)
    known = ", ".join(list(registry.benchmarks) + [f"{s} (suite)" for s in registry.suites])
    out = _expand(names, registry, lambda name: DataError(f"unknown benchmark {name!r}; known: {known}."))
    return [registry.benchmarks[n] for n in out]


def choice_prompt(question: str, choices: list[str]) -> str:
    """`question`, the lettered choices one a line, and the boxed-letter instruction."""
    if len(choices) > len(string.ascii_uppercase):
        raise DataError(f"{len(choices)} choices: at most {len(string.ascii_uppercase)} are supported.")
    lines = [f"{letter}) {c}" for letter, c in zip(string.ascii_uppercase, choices)]
    return f"{question.strip()}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"


def hub_row(benchmark: Benchmark, row: dict, index: int) -> dict:
    """One hub row -> our schema (`{id, problem, answer}` or `{id, question, choices, answer}`), per `hub_layout`.

    Column names are those of the pinned revisions: MATH-500/AIME `problem`+`answer`; amc23/minerva
    `question`+`answer`; AMC-83 `problem`+`answer` with an `id` that restarts at 0 for 2023, so the row index
    names the row (`amc83-00`..`amc83-82`, the local file's ids); olympiadbench `question`+`final_answer` (a
    list); MMLU-Pro `question`+`options`+`answer` (a letter); ARC `question`+`choices{text,label}`+`answerKey`
    (a label, sometimes "1".."4"); GPQA `Question`+`Correct Answer`+`Incorrect Answer 1..3`."""
    if benchmark.columns:
        return column_row(benchmark, row, index)
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


def column_row(benchmark: Benchmark, row: dict, index: int) -> dict:
    """One row whose columns `benchmark.columns` names ({our field: its column}) -> our schema; the row's index is
    its id unless an `id` column is named (or the row has an `id`)."""
    out = {"id": row.get("id", index)}
    for ours, theirs in benchmark.columns.items():
        if theirs not in row:
            raise DataError(f"{benchmark.name} row {index}: no column {theirs!r} (its `columns` map {ours} to it); "
                            f"the row has {', '.join(map(repr, row))}.")
        out[ours] = row[theirs]
    return out


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


def load_benchmark(benchmark: Benchmark, data_dir: str | Path | None, system_prompt: str | None,
                   max_problems: int | None = None) -> tuple[list[dict], str]:
    """Rows `{id, messages, gold, kind, num_choices}` and the data's source (file path + sha256, or hub id@revision).

    `data_dir=None` loads the hub copy. A missing local file is an error naming the file (never a silent hub
    fallback: the numbers must say which data they came from). A file written by `download_benchmark` also names
    the hub revision it came from."""
    if data_dir is not None:
        path = Path(data_dir).expanduser() / benchmark.local_file
        if not path.is_file():
            raise DataError(f"{benchmark.name}: data file {path} not found.{missing_file_hint(benchmark, data_dir)}")
        sha = file_sha256(path)
        raw, source = read_jsonl(path), f"{path} sha256:{sha}"
        if benchmark.columns and benchmark.hub_id is None:  # a hub copy's local file is in our schema (`make data`)
            raw = [column_row(benchmark, r, i) for i, r in enumerate(raw)]
        entry = read_sources(data_dir).get(benchmark.name, {})
        if entry.get("sha256") == sha:
            source += f" from {entry['source']}"
    else:
        raw, source = hub_rows(benchmark), hub_source(benchmark)
    return prompt_rows(benchmark, raw[:max_problems] if max_problems else raw, system_prompt), source


def missing_file_hint(benchmark: Benchmark, data_dir: str | Path) -> str:
    """What writes `benchmark`'s local file: its `made_by` command, or `make data` for a hub copy."""
    if benchmark.made_by:
        return f" Run {benchmark.made_by} to write it."
    if benchmark.hub_id:
        return f" Run `make data DATA_DIR={data_dir}` to download it, or set `data_dir: null` to read the hub copy."
    return ""


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
        rows.append({"id": str(r.get("id", i)), "messages": prompt_messages(text, system_prompt),
                     "gold": str(r["answer"]), "kind": benchmark.kind, "num_choices": num_choices})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{benchmark.name}: row ids are not unique (the generation cache is keyed on them).")
    return rows


def download_benchmark(benchmark: Benchmark, data_dir: str | Path, force: bool = False) -> str:
    """Write `benchmark`'s pinned hub copy to `data_dir/<local_file>`, the file `load_benchmark(benchmark,
    data_dir)` reads, and record its source in `data_dir/sources.json`; returns a one-line summary.

    Rows are checked before anything is written, and every file is replaced atomically (a killed download leaves
    the old file or the new one). A file already downloaded from the same revision, unchanged since, is kept unless
    `force`."""
    data_dir = Path(data_dir).expanduser()
    path, source, sources = data_dir / benchmark.local_file, hub_source(benchmark), read_sources(data_dir)
    entry = sources.get(benchmark.name, {})
    if not force and entry.get("source") == source and path.is_file() and file_sha256(path) == entry.get("sha256"):
        return f"{benchmark.name}: {path} is up to date ({entry['rows']} rows from {source})"
    rows = hub_rows(benchmark)
    prompt_rows(benchmark, rows, None)
    data = "".join(map(json_line, rows)).encode()
    atomic_write_bytes(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    sources[benchmark.name] = {"file": benchmark.local_file, "source": source, "rows": len(rows),
                               "sha256": file_sha256(path)}
    atomic_write_text(data_dir / SOURCES_FILE, json.dumps(sources, indent=2, sort_keys=True) + "\n")
    return f"{benchmark.name}: {len(rows)} rows from {source} -> {path}"
