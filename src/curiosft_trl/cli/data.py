"""`curiosft-data --output_dir DIR [--benchmarks paper amc23 ...]`: download the benchmarks for offline evaluation.

Writes each benchmark at the hub revision pinned in its registry (`eval/benchmarks.yaml`, and the files given with
`--benchmark_files`) to `DIR/<file>.jsonl` (`.jsonl.gz` for GPQA-Diamond and MMLU-Pro), the files an evaluation
recipe reads with `data_dir: DIR`, and `DIR/sources.json` (benchmark -> hub revision, rows, sha256). Files already
downloaded from the same revision are kept. A benchmark that fails (no hub access, GPQA's gate) is one `error: ...`
line; the others are still written, and the exit status is 2 if any failed. Needs hub access (GPQA: accept its
terms on the hub and set HF_TOKEN).
"""

import argparse
import sys

from ..evaluation.benchmarks import BENCHMARKS, download_benchmark, hub_source, resolve_benchmarks
from . import run_cli

# Those with a hub copy; the others' files are written by the command their `made_by` names
DOWNLOADABLE = [name for name, b in BENCHMARKS.items() if b.hub_id is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="curiosft-data", description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True, help="folder to write; evaluate with `data_dir: <it>`")
    parser.add_argument("--benchmarks", nargs="+", default=DOWNLOADABLE,
                        help=f"benchmarks or suites (default: all of {', '.join(DOWNLOADABLE)})")
    parser.add_argument("--benchmark_files", nargs="+", default=[],
                        help="registry YAML files of one's own benchmarks (as in the eval recipe)")
    parser.add_argument("--force", action="store_true", help="download again even if a file is up to date")
    args = parser.parse_args(argv)
    benchmarks = [b for b in resolve_benchmarks(args.benchmarks, args.benchmark_files) if b.hub_id is not None]
    failed = []
    for b in benchmarks:
        try:
            print(download_benchmark(b, args.output_dir, force=args.force), flush=True)
        except Exception as e:  # noqa: BLE001 (no hub access, a gated or moved dataset: say which, go on)
            hint = " (gated: accept its terms on the hub and set HF_TOKEN)" if b.hub_layout == "gpqa" else ""
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"error: {b.name}: cannot download {hub_source(b)}{hint}: {type(e).__name__}: {detail}",
                  file=sys.stderr, flush=True)
            failed.append(b.name)
    if failed:
        raise SystemExit(2)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
