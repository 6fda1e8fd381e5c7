"""What the evaluation does differently on CPU and GPU, as pure functions of the device."""

from curiosft_trl.evaluation import EvalConfig, config
from curiosft_trl.evaluation.generation import default_chunk_size, vllm_environment


def test_vllm_runs_its_engine_in_process_on_cpu_only():
    assert vllm_environment(on_gpu=False) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert vllm_environment(on_gpu=True) == {}  # vLLM's default: the engine core in its own process


def test_generation_chunks_are_sized_for_the_device():
    # vLLM batches within one call: 4 x its offline max_num_seqs (1024 on >= 70 GiB GPUs, else 256); CPU: small
    assert default_chunk_size("vllm", gpu_memory_gib=79.6, batch_size=64) == 4096  # H100 80 GB
    assert default_chunk_size("vllm", gpu_memory_gib=139.8, batch_size=64) == 4096  # H200
    assert default_chunk_size("vllm", gpu_memory_gib=39.4, batch_size=64) == 1024  # A100 40 GB
    assert default_chunk_size("vllm", gpu_memory_gib=None, batch_size=64) == 64  # CPU
    assert default_chunk_size("transformers", gpu_memory_gib=79.6, batch_size=32) == 32  # one batch per chunk
    assert default_chunk_size("transformers", gpu_memory_gib=None, batch_size=8) == 8


def test_the_harness_asks_the_device_unless_the_recipe_gives_a_chunk_size(monkeypatch):
    monkeypatch.setattr(config, "gpu_memory_gib", lambda: 79.6)
    assert EvalConfig(backend="vllm").generation_chunk_size() == 4096
    assert EvalConfig(backend="vllm", chunk_size=100).generation_chunk_size() == 100
    monkeypatch.setattr(config, "gpu_memory_gib", lambda: None)
    assert EvalConfig(backend="vllm").generation_chunk_size() == 64
