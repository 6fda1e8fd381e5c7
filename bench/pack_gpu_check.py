"""Pack the GPU check for an offline GPU node: one folder with the project, the wheels the node lacks, and `run.sh`.

    python bench/pack_gpu_check.py --out dist/gpu-check            # downloads ~20 MB of wheels from the package index
    python bench/pack_gpu_check.py --dry-run                        # prints what it would fetch
    # on the node (CUDA torch installed, no network):  bash run.sh  ->  results/ (every result, one folder)

The node is assumed to be a CUDA torch image like the one the H200 checks ran on (2026-12-04: Python 3.12,
torch 2.11.0+cu130, with accelerate 1.15.0, huggingface_hub 1.33, tokenizers 0.23.2, pyarrow, pandas, xxhash,
typer, but no TRL, datasets or math-verify, and transformers 5.17 / peft 0.21.0 older than the pins). `PACKAGES` is
what such a node lacks, at the versions constraints.txt pins; each wheel is fetched without its dependencies
(`--no-deps`), and `run.sh` installs them the same way, so the node's torch (and everything else it has) stays.
DeepSpeed (an sdist only) and vLLM (GBs) are left out: the GPU check's `zero3_resume` and `eval_throughput` parts then
record their failure and the others run.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The exact versions `make install` uses (constraints.txt): `name==version` lines
PINS = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.split("#")[0].strip())
# What the node lacks, or holds at a version older than the pins (the rest of the project's dependencies it has)
PACKAGES = [
    *(f"{name}=={PINS[name]}" for name in ("trl", "transformers", "datasets", "peft", "math-verify")),
    "latex2sympy2_extended==1.11.0",  # math-verify's parser
    "antlr4-python3-runtime==4.13.2",  # math-verify[antlr4-13-2]
    "dill==0.4.1",  # datasets
    "multiprocess==0.70.19",  # datasets
]
SIZE_LIMIT = 60 * 2**20

RUN_SH = r"""#!/usr/bin/env bash
# The GPU check on an offline node: installs wheels/ into this Python without touching its torch, then runs the GPU
# check, the teacher-side micro-benchmark and a profile of one CurioSFT step; everything lands in results/.
# PYTHON=... picks the interpreter (default python3); PARTS=... the GPU check's parts. About 8 minutes on one H200.
set -u
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
RESULTS=$PWD/results
mkdir -p "$RESULTS"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available())" > "$RESULTS/torch-before.txt" 2>&1
"$PY" -m pip install --no-index --find-links wheels --no-deps wheels/*.whl > "$RESULTS/pip-install.log" 2>&1
# the project itself, without dependencies (not on PYTHONPATH: the reward grader's workers would not see it)
"$PY" -m pip install --no-index --no-deps --no-build-isolation ./project >> "$RESULTS/pip-install.log" 2>&1
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available())" > "$RESULTS/torch-after.txt" 2>&1
cd project
timeout 330 "$PY" bench/gpu_check.py --out "$RESULTS/gpu-check.json" ${PARTS:+--parts $PARTS} \
    > "$RESULTS/gpu-check.log" 2>&1
timeout 60 "$PY" bench/teacher_side.py --compile > "$RESULTS/teacher-side.txt" 2>&1
timeout 60 "$PY" bench/sft_step.py curiosft --arch qwen2.5-math-1.5b --seq-len 4096 --batch 1 --steps 6 --profile \
    > "$RESULTS/profile-curiosft.json" 2> "$RESULTS/profile-curiosft.log"
echo "results in $RESULTS:"; ls -l "$RESULTS"
"""


def fetch_command(dest: Path, python_version: str, packages: list[str]) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps", "--platform",
            "manylinux2014_x86_64", "--python-version", python_version, "--dest", str(dest), *packages]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "gpu-check")
    parser.add_argument("--python-version", default="3.12", help="the node's Python (the H200 image's: 3.12)")
    parser.add_argument("--packages", nargs="+", default=PACKAGES, help="wheels to fetch (default: PACKAGES)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fetch command and the packages, fetch nothing")
    opts = parser.parse_args()
    command = fetch_command(opts.out / "wheels", opts.python_version, opts.packages)
    if opts.dry_run:
        print("would fetch:", *opts.packages, sep="\n  ")
        print("with:", " ".join(command))
        return
    if opts.out.exists():
        shutil.rmtree(opts.out)
    (opts.out / "project").mkdir(parents=True)
    # The committed tree of HEAD: what was tested, without local outputs or a virtualenv
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(opts.out / "project")], input=archive, check=True)
    subprocess.run(command, check=True)
    (opts.out / "run.sh").write_text(RUN_SH)
    (opts.out / "run.sh").chmod(0o755)
    size = folder_bytes(opts.out)
    wheels = sorted(p.name for p in (opts.out / "wheels").glob("*.whl"))
    print(f"{opts.out}: {size / 2**20:.1f} MiB, {len(wheels)} wheels:", *wheels, sep="\n  ")
    if size > SIZE_LIMIT:
        raise SystemExit(f"{opts.out} is {size / 2**20:.1f} MiB, over the {SIZE_LIMIT / 2**20:.0f} MiB limit")


if __name__ == "__main__":
    main()
