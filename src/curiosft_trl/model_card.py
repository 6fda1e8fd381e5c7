"""What a trained checkpoint's model card says about where it came from, shared by `CurioSFTTrainer` and
`CurioGRPOTrainer`.

TRL's `create_model_card` names the base model only when it is a hub id: from a local folder (the tiny base, an SFT
checkpoint, a GGUF import) it writes "a fine-tuned version of [None](https://huggingface.co/None)" and a quick start
that loads `model="None"`. `name_base_model` rewrites those two lines of the card TRL just wrote; the card's metadata
keeps TRL's `base_model` (a hub id or nothing), which the hub validates.
"""

from pathlib import Path

TRL_UNNAMED_BASE = "a fine-tuned version of [None](https://huggingface.co/None)"
TRL_UNNAMED_QUICK_START = 'model="None"'


def base_model_description(config) -> str | None:
    """The base model as a card names it: the local folder it was loaded from, and the GGUF file it was imported
    from when it carries `gguf_source`; None for a hub id (TRL names that itself) or an unknown origin."""
    origin = getattr(config, "_name_or_path", None)
    if not origin or not Path(origin).expanduser().is_dir():
        return None
    text = f"the local model `{origin}`"
    source = getattr(config, "gguf_source", None)
    if isinstance(source, dict) and source.get("gguf_name"):
        kind = f", {source['file_type']}" if source.get("file_type") else ""
        text += f" (imported from the GGUF file `{source['gguf_name']}`{kind}: dequantised, not the original weights)"
    return text


def name_base_model(card: Path, config, model_id: str) -> None:
    """Name the local base model in the card TRL wrote at `card`, and load `model_id` (the hub id the model is
    pushed to, else its output folder) in the quick start."""
    description = base_model_description(config)
    if not card.is_file():  # written on the main process only
        return
    text = card.read_text(encoding="utf-8")
    if description:
        text = text.replace(TRL_UNNAMED_BASE, f"a fine-tuned version of {description}")
    text = text.replace(TRL_UNNAMED_QUICK_START, f'model="{model_id}"')
    card.write_text(text, encoding="utf-8")
