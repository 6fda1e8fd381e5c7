"""`curiosft-tiny [--output_dir outputs/tiny]`: build the embedded tiny default once (base model and task data).

Writes `<output_dir>/base` (the tiny base model, pretrained on diverse traces) and `<output_dir>/data/*.jsonl`
(canonical SFT traces, RL prompts, a test split); both are reused if already complete.
"""

import argparse
import time

from ..known_warnings import quiet_known_warnings
from ..tiny.base import (BASE_VERSION, BUILD_TIME, BUSY_MACHINE_HINT, STEPS, ensure_tiny_base, ensure_tiny_data,
                         is_complete)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="curiosft-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/tiny")
    parser.add_argument("--force", action="store_true", help="rebuild the base model even if it is complete")
    args = parser.parse_args(argv)
    quiet_known_warnings()
    start, base_dir = time.time(), f"{args.output_dir}/base"
    if args.force or not is_complete(base_dir):
        print(f"curiosft-tiny: building the tiny base model ({BASE_VERSION}) in {base_dir}, once: a tokenizer, then "
              f"{STEPS} pretraining steps, {BUILD_TIME} ({BUSY_MACHINE_HINT}).", flush=True)
    base = ensure_tiny_base(base_dir, force=args.force)
    data = ensure_tiny_data(f"{args.output_dir}/data")
    print(f"tiny base: {base}  data: {', '.join(str(p) for p in data.values())}  ({time.time() - start:.0f}s)")


if __name__ == "__main__":
    main()
