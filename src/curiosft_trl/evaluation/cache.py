"""The resumable generation cache: one JSONL file per (model, benchmark, sampling settings), a line per sample.

A line is `{problem_id, sample_index, seed, prompt_sha, text, num_tokens, finish_reason, entropy_sum,
entropy_hist}`. Lines are appended in chunks, each chunk with one `write` and an `fsync`, so a killed run loses
at most the chunk in flight. A line that is not such an entry (the torn last line of a killed run, a garbled or
hand-edited one) is skipped on load, with one warning naming the file and the line numbers, and only its sample
is generated again; every other line is kept. Loading never changes the file: the next write to a cache with bad
lines rewrites it without them, atomically. Entries whose prompt hash no longer matches the prompt (the data or
system prompt changed) are ignored and regenerated. Data-parallel workers (`parallel.py`) each write a part file
beside the cache, in the same format (`part_path`, `merge_parts`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from ..errors import DataError
from ..files import atomic_write_text, json_line
from .generation import Sample, SamplingConfig


class Job(NamedTuple):
    """One sample to generate: problem `problem_id`'s sample `sample_index`, drawn with `seed` from `prompt` (its
    chat-template text). The cache keys it by (problem_id, sample_index), checked against the prompt's hash."""

    problem_id: str
    sample_index: int
    seed: int
    prompt: str


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


# The fields `GenerationCache.get` reads from a line, and their JSON types
FIELDS = {"problem_id": str, "sample_index": int, "prompt_sha": str, "text": str, "num_tokens": int,
          "finish_reason": str, "entropy_sum": (int, float), "entropy_hist": list}


def parse_entry(line: bytes) -> dict | None:
    """One cache line as an entry, or None when it is not one (not JSON, not an object, a field missing or of
    the wrong type)."""
    try:
        entry = json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None
    ok = isinstance(entry, dict) and all(isinstance(entry.get(k), t) and not isinstance(entry.get(k), bool)
                                         for k, t in FIELDS.items())
    return entry if ok else None


class GenerationCache:
    """Samples already generated for one (model, benchmark, settings), keyed by `(problem_id, sample_index)`.

    `bad_lines`: the 1-based numbers of the file's lines that are not entries (skipped, and dropped at the next
    write, which then rewrites the file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[tuple[str, int], dict] = {}
        self.bad_lines: list[int] = []
        self._needs_newline = False  # the last line has no newline (a write cut after its `}`): start a new line
        if self.path.exists():
            if not self.path.is_file():
                raise DataError(f"{self.path}: is a folder (or not a regular file) where the generation cache's JSONL "
                                "file goes; move it out of the way, or give this evaluation another output_dir.")
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            entry = parse_entry(line)
            if entry is None:
                self.bad_lines.append(number)
            else:  # a later line replaces an earlier one with the same key (it is newer)
                self.entries[(entry["problem_id"], entry["sample_index"])] = entry
        self._needs_newline = bool(data) and not data.endswith(b"\n")
        if n := len(self.bad_lines):
            shown = ", ".join(map(str, self.bad_lines[:10])) + (f" and {n - 10} more" if n > 10 else "")
            s = "s" * (n > 1)
            print(f"warning: {self.path}: skipped {n} unreadable line{s} (line{s} {shown}; expected one JSON object "
                  f"per sample with its {', '.join(list(FIELDS)[:-1])} and {list(FIELDS)[-1]}); "
                  f"{'their' if n > 1 else 'its'} samples will be generated again", file=sys.stderr)

    def get(self, problem_id: str, sample_index: int, prompt: str) -> Sample | None:
        entry = self.entries.get((problem_id, sample_index))
        if entry is None or entry["prompt_sha"] != prompt_sha(prompt):
            return None
        return Sample(*(entry[k] for k in ("text", "num_tokens", "finish_reason", "entropy_sum", "entropy_hist")))

    def append(self, jobs: list[Job], samples: list[Sample]) -> None:
        """Record `samples[i]` for `jobs[i] = (problem_id, sample_index, seed, prompt)`, durably, in one write."""
        self._write([{"problem_id": pid, "sample_index": idx, "seed": seed, "prompt_sha": prompt_sha(prompt),
                      **asdict(s)} for (pid, idx, seed, prompt), s in zip(jobs, samples)])

    def part_path(self, replica: int) -> Path:
        """The file data-parallel worker `replica` writes this cache's samples to."""
        return self.path.with_name(f"{self.path.stem}.part-{replica}.jsonl")

    def merge_parts(self) -> int:
        """Fold the part files of data-parallel workers into this cache (one durable write), then delete them;
        returns how many samples were added. A part entry replaces a cache entry with the same key (it is newer)."""
        parts = sorted(self.path.parent.glob(f"{self.path.stem}.part-*.jsonl"))
        new = [entry for part in parts for key, entry in GenerationCache(part).entries.items()
               if self.entries.get(key) != entry]
        if new:
            self._write(new)
        for part in parts:
            part.unlink()
        return len(new)

    def _write(self, entries: list[dict]) -> None:
        """Add `entries` to the file durably: appended in one write, or, when the file has bad lines, the whole
        cache rewritten without them through a temporary file and a rename."""
        self.entries.update({(entry["problem_id"], entry["sample_index"]): entry for entry in entries})
        if self.bad_lines:
            atomic_write_text(self.path, "".join(map(json_line, self.entries.values())))
            self.bad_lines, self._needs_newline = [], False
            return
        text = "".join(map(json_line, entries))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("\n" * self._needs_newline + text)
            f.flush()
            os.fsync(f.fileno())
        self._needs_newline = False


def progress(total: int, desc: str) -> tqdm:
    """A samples bar, shown only for 64 samples or more."""
    return tqdm(total=total, desc=desc, unit="sample", leave=False, disable=total < 64)


def generate_missing(backend, work: list[tuple[GenerationCache, Job]], sampling: SamplingConfig, chunk_size: int,
                     desc: str = "generate") -> None:
    """Generate `work` = [(cache, job)] in order, `chunk_size` samples per `backend.generate` call (a chunk may span
    benchmarks), appending each chunk's samples to their caches before the next call. The evaluation's process
    calls it, or each data-parallel worker with its share (`parallel.py`)."""
    with progress(len(work), desc) as bar:
        for start in range(0, len(work), chunk_size):
            chunk = work[start : start + chunk_size]
            samples = backend.generate([job.prompt for _, job in chunk], [job.seed for _, job in chunk], sampling)
            for cache in {id(c): c for c, _ in chunk}.values():
                mine = [(job, sample) for (c, job), sample in zip(chunk, samples) if c is cache]
                cache.append([job for job, _ in mine], [sample for _, sample in mine])
            bar.update(len(chunk))
