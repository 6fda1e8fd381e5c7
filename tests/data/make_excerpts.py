"""Write the excerpts in this folder from a full copy of the data (`python tests/data/make_excerpts.py FULL_DIR`).

Each excerpt is the first `HEAD` rows of the full file, byte for byte (the tests read row 0 and the first few rows);
the SFT and RL files also keep their two shortest rows, which the SmolLM2 pipeline test trains on. Gzipped files
stay gzipped (GPQA's authors ask for no plain-text copies that crawlers can read; mtime 0, so reruns are identical).
"""

import gzip
import sys
from pathlib import Path

HEAD = 6
FILES = ["aime2024.jsonl", "aime2025.jsonl", "amc2023.jsonl", "amc_2022_2023_83.jsonl", "arc_challenge_test.jsonl",
         "gpqa_diamond.jsonl.gz", "math500.jsonl", "minerva_math.jsonl", "mmlu_pro_test.jsonl.gz",
         "olympiadbench.jsonl", "rl_math_lvl3to5_8k.jsonl", "sft_math_train_lvl4to5.jsonl"]
SHORTEST = {"sft_math_train_lvl4to5.jsonl": ("problem", "solution"), "rl_math_lvl3to5_8k.jsonl": ("problem",)}


def excerpt(lines: list[bytes], name: str) -> list[bytes]:
    import json

    keep = lines[:HEAD]
    if name in SHORTEST:
        fields = SHORTEST[name]
        rows = [json.loads(line) for line in lines]
        order = sorted(range(len(rows)), key=lambda i: sum(len(rows[i][f]) for f in fields))[:2]
        keep += [lines[i] for i in order if i >= HEAD]
    return keep


def main(full: Path, out: Path = Path(__file__).resolve().parent) -> None:
    for name in FILES:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(full / name, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        data = b"".join(excerpt(lines, name))
        if name.endswith(".gz"):
            (out / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (out / name).write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
