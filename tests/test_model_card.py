"""A trained checkpoint's model card names its base model (a local folder, a GGUF import) and the loss that trained
it, where TRL's card says "a fine-tuned version of [None]" and "trained with CurioSFT" for every loss."""

from types import SimpleNamespace

import pytest

from curiosft_trl.model_card import base_model_description, name_base_model
from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset
from curiosft_trl.tiny import TINY_SYSTEM_PROMPT


def sft_trainer(model_dir, data, out, loss):
    from curiosft_trl.sft.trainer import CurioSFTTrainer

    args = CurioSFTConfig(output_dir=str(out), sft_loss=loss, max_steps=1, use_cpu=True, bf16=False,
                          report_to=[], max_length=128)
    return CurioSFTTrainer(model=str(model_dir), args=args,
                           train_dataset=load_sft_dataset(str(data), system_prompt=TINY_SYSTEM_PROMPT))


@pytest.mark.parametrize("loss, trained_with, cites_paper", [
    ("curiosft", "This model was trained with CurioSFT, a method introduced in", True),
    ("nll", "This model was trained with supervised fine-tuning, `sft_loss: nll` (TRL's negative", False),
])
def test_the_sft_card_names_the_local_base_and_the_loss_that_trained(tiny_model_dir, tiny_sft_file, tmp_path, loss,
                                                                     trained_with, cites_paper):
    trainer = sft_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "out", loss)
    trainer.create_model_card(model_name="out")  # as `save_model` calls it
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"This model is a fine-tuned version of the local model `{tiny_model_dir}`." in card
    assert "None" not in card and f'model="{tmp_path / "out"}"' in card
    assert trained_with in card
    assert ("2602.02244" in card) == cites_paper


def test_a_gguf_import_is_named_with_its_file_and_that_it_is_dequantised(tmp_path):
    config = SimpleNamespace(_name_or_path=str(tmp_path), gguf_source={
        "gguf_name": "SmolLM2-135M-Instruct.Q4_1.gguf", "file_type": "MOSTLY_Q4_1"})
    assert base_model_description(config) == (
        f"the local model `{tmp_path}` (imported from the GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf`, MOSTLY_Q4_1: "
        "dequantised, not the original weights)")


def test_a_hub_base_is_left_to_trl_and_a_missing_card_is_no_error(tmp_path):
    hub = SimpleNamespace(_name_or_path="Qwen/Qwen2.5-Math-7B")
    assert base_model_description(hub) is None
    card = tmp_path / "README.md"
    card.write_text("a fine-tuned version of [Qwen/Qwen2.5-Math-7B](https://huggingface.co/Qwen/Qwen2.5-Math-7B)\n"
                    'model="me/model"\n')
    before = card.read_text()
    name_base_model(card, hub, "me/model")
    assert card.read_text() == before
    name_base_model(tmp_path / "elsewhere" / "README.md", hub, "x")  # another process's card: nothing to do
