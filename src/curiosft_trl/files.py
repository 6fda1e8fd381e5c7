"""File helpers every stage shares: atomic writes, JSONL reading, content hashes and per-model folder names.

Nothing here imports a stage: `sft/`, `rl/`, `evaluation/` and `study/` all read and write through these.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path

from .errors import DataError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a `.jsonl` or `.jsonl.gz` file (gzip is decompressed in memory, never to disk)."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}).") from e
    return rows


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes as stored (compressed for `.gz`), recorded in results.json."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_line(obj) -> str:
    """One JSONL line: `obj` as ASCII JSON and a newline."""
    return json.dumps(obj, ensure_ascii=True) + "\n"


def short_hash(obj) -> str:
    """A 12-hex-digit sha256 of `obj`'s canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def model_key(model: str) -> str:
    """A cache directory name for a checkpoint: its name plus a hash of its path, config and weight files.

    Weight files are identified by name, size and mtime (hashing 15 GB of weights per run is not worth it), so
    a checkpoint rewritten in place gets a fresh cache.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
        ident = [str(path.resolve())] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    else:
        ident = [model]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name or model)[-60:]
    return f"{name}-{short_hash(ident)}"
