"""CurioSFTTrainer on the tiny model: every `sft_loss` learns, the teacher syncs on schedule, and resumes intact."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from curiosft_trl.sft.config import CurioSFTConfig
from curiosft_trl.sft.data import load_sft_dataset
from curiosft_trl.sft.losses import LOSSES, SFTLoss
from curiosft_trl.sft.teacher import TEACHER_DIR, TEACHER_WEIGHTS
from curiosft_trl.sft.trainer import CurioSFTTrainer
from curiosft_trl.tiny.task import TINY_SYSTEM_PROMPT


def make_trainer(model_dir, data_file, out_dir, callbacks=(), peft_config=None, **overrides):
    args = dict(
        output_dir=str(out_dir),
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        teacher_chunk_size=64,  # several chunks per batch: the chunked path is what runs
    )
    args.update(overrides)
    dataset = load_sft_dataset(str(data_file), system_prompt=TINY_SYSTEM_PROMPT)
    return CurioSFTTrainer(model=str(model_dir), args=CurioSFTConfig(**args), train_dataset=dataset,
                           callbacks=list(callbacks), peft_config=peft_config)


def mean_nll(model, tokenizer, dataset) -> float:
    """NLL per completion token of `model` on the first 16 rows (independent of the training loss)."""
    total, count = 0.0, 0
    model.eval()
    for row in dataset.select(range(16)):
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        ids = tokenizer(full, return_tensors="pt", add_special_tokens=False).input_ids
        start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
        with torch.no_grad():
            log_p = model(ids).logits[0, :-1].float().log_softmax(-1)
        gold = ids[0, 1:]
        total += -log_p[start - 1 :].gather(-1, gold[start - 1 :, None]).sum().item()
        count += len(gold) - (start - 1)
    return total / count


@pytest.mark.parametrize("sft_loss", list(LOSSES))
def test_every_sft_loss_trains(sft_loss, tiny_model_dir, tiny_sft_file, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss=sft_loss)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = load_sft_dataset(str(tiny_sft_file), system_prompt=TINY_SYSTEM_PROMPT)
    before = mean_nll(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, rows)
    trainer.train()
    after = mean_nll(trainer.model, tokenizer, rows)
    assert after < before - 0.3, f"{sft_loss}: NLL {before:.3f} -> {after:.3f}"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if sft_loss != "dft":  # DFT's loss -p log p grows while p is small: its NLL is checked above
        assert losses[-1] < losses[0]
    logged = trainer.state.log_history[0]
    assert {"entropy", "mean_token_accuracy", "num_tokens"} <= set(logged)
    if LOSSES[sft_loss].distils:
        assert {"nll", "distill", "tau/mean", "tau/min", "tau/max", "tau/frac_min", "tau/frac_max",
                "teacher_entropy", "frac_low_entropy"} <= set(logged)
        low, mean, high = logged["tau/min"], logged["tau/mean"], logged["tau/max"]
        assert 1.1 - 1e-6 <= low <= mean + 1e-6 and mean <= high + 1e-6 and high <= 1.5 + 1e-6
        # the logged loss is exactly its two logged terms
        assert logged["loss"] == pytest.approx(logged["nll"] + logged["distill"], rel=1e-4)


def test_a_loss_added_to_the_registry_runs_with_no_other_change(tiny_model_dir, tiny_sft_file, tmp_path,
                                                               monkeypatch):
    # One registry entry plus its per-token function: the config accepts the name, the trainer runs the function with
    # the config fields the entry names, and keeps no teacher
    def scaled_nll(student_logprobs, student_entropy, mask, entropy_coef):
        return -entropy_coef * student_logprobs, torch.zeros_like(mask)

    monkeypatch.setitem(LOSSES, "scaled_nll", SFTLoss("scaled_nll", "NLL times `entropy_coef`", per_token=scaled_nll,
                                                      fields=("entropy_coef",)))
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="scaled_nll", entropy_coef=0.5)
    assert trainer.teacher_model is None
    batch = _a_batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        outputs = trainer.model(**batch, use_cache=False, fused_lm_head=True)
    nll = -(outputs.log_probs * outputs.label_mask).sum() / outputs.label_mask.sum()
    assert loss.item() == pytest.approx(0.5 * nll.item(), rel=1e-6)
    assert trainer._metrics["eval"]["entropy_bonus_frac"] == [0.0]


class Recorder(TrainerCallback):
    """Copies of the student's and teacher's parameters after each optimizer step (and the teacher's sync)."""

    def __init__(self, trainer_ref):
        self.trainer_ref, self.student, self.teacher = trainer_ref, [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        teacher = self.trainer_ref[0].teacher_model
        self.student.append([p.detach().clone() for p in model.parameters()])
        self.teacher.append([p.detach().clone() for p in teacher.parameters()])


def test_teacher_syncs_every_k_steps_with_alpha(tiny_model_dir, tiny_sft_file, tmp_path):
    ref = []
    recorder = Recorder(ref)
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, max_steps=5,
                           ref_model_sync_steps=2, ref_model_mixup_alpha=0.75)
    ref.append(trainer)
    trainer.add_callback(recorder)  # after the sync callback: it sees each step's synced teacher
    teacher = [p.detach().clone() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()]
    assert all(torch.equal(a, b) for a, b in zip(teacher, trainer.teacher_model.parameters(), strict=True))
    trainer.train()
    for step, (student, recorded) in enumerate(zip(recorder.student, recorder.teacher, strict=True), start=1):
        if step % 2 == 0:
            teacher = [0.25 * t + 0.75 * s for t, s in zip(teacher, student, strict=True)]
        for expected, got in zip(teacher, recorded, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert not all(torch.equal(t, s) for t, s in zip(recorder.teacher[-1], recorder.student[-1], strict=True))


def test_resume_restores_teacher_and_loss_trajectory(tiny_model_dir, tiny_sft_file, tmp_path):
    common = dict(max_steps=6, save_strategy="steps", save_steps=3, ref_model_sync_steps=2,
                  ref_model_mixup_alpha=0.5, learning_rate=5e-4)
    full = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "full", **common)
    full.train()

    class StopAt3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 3

    first = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "split", callbacks=[StopAt3()], **common)
    first.train()
    checkpoint = tmp_path / "split" / "checkpoint-3"
    assert (checkpoint / TEACHER_DIR / TEACHER_WEIGHTS).is_file()
    resumed = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "split", **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    def losses(trainer):
        return [h["loss"] for h in trainer.state.log_history if "loss" in h and h["step"] > 3]

    assert len(losses(resumed)) == 3
    assert losses(resumed) == pytest.approx(losses(full), rel=1e-4)
    for a, b in zip(resumed.teacher_model.parameters(), full.teacher_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_resume_without_saved_teacher_is_an_error(tiny_model_dir, tiny_sft_file, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, max_steps=2, save_strategy="steps",
                           save_steps=2)
    trainer.train()
    (tmp_path / "checkpoint-2" / TEACHER_DIR / TEACHER_WEIGHTS).unlink()
    resumed = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, max_steps=3)
    with pytest.raises(FileNotFoundError, match="no CurioSFT teacher"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_curiosft_with_lora_adapters_syncs_checkpoints_and_resumes(tiny_model_dir, tiny_sft_file, tmp_path):
    """With a `peft_config` the teacher is a frozen copy of the adapted student: equal to it at step 0, synced on
    schedule, checkpointed as its adapters only, and restored on resume (same losses as an uninterrupted run)."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, ref_model_sync_steps=2,
                  ref_model_mixup_alpha=0.5, learning_rate=1e-2)
    full = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "full", peft_config=lora, **common)
    student, teacher = dict(full.model.named_parameters()), dict(full.teacher_model.named_parameters())
    assert set(student) == set(teacher) and all(torch.equal(student[n], teacher[n]) for n in student)
    adapters = {n for n, p in student.items() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters) and not any(p.requires_grad for p in teacher.values())
    full.train()
    losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    assert losses[-1] < losses[0] and "distill" in full.state.log_history[0]
    teacher = dict(full.teacher_model.named_parameters())
    lora_b = [n for n in adapters if "lora_B" in n]
    assert all(teacher[n].abs().sum() > 0 for n in lora_b)  # synced toward the trained adapters...
    assert not all(torch.equal(teacher[n], student[n]) for n in adapters)  # ...but not onto them
    saved = load_file(str(tmp_path / "full" / "checkpoint-2" / TEACHER_DIR / TEACHER_WEIGHTS))
    assert set(saved) == adapters  # the frozen base is not written twice

    resumed = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path / "full", peft_config=lora, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    later = [h["loss"] for h in resumed.state.log_history if "loss" in h and h["step"] > 2]
    assert later == pytest.approx(losses[2:], rel=1e-4)
    for name, p in resumed.teacher_model.named_parameters():
        torch.testing.assert_close(p, teacher[name], rtol=1e-4, atol=1e-6)



def test_teacher_sync_mixes_only_the_students_trainable_parameters():
    """Frozen parameters (a PEFT base) are left as they are, so teacher and student bases stay equal by construction
    (which the adapters-only teacher checkpoint relies on); trainable ones follow TR-DPO's rule."""
    from curiosft_trl.sft.teacher import TeacherSyncCallback

    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    student.bias.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    TeacherSyncCallback.sync_target_model(student, teacher, 0.25)
    torch.testing.assert_close(teacher.weight, 0.75 * before["weight"] + 0.25 * student.weight)
    assert torch.equal(teacher.bias, before["bias"])


def test_with_bf16_autocast_the_teacher_runs_in_the_students_precision(tiny_model_dir, tiny_sft_file, tmp_path,
                                                                         monkeypatch):
    # fp32 weights + `bf16: true`: accelerate runs the student's forward under autocast; the teacher, whose
    # forward is called past accelerate's wrapper, must too (else it runs in fp32: slow and asymmetric)
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", max_steps=1, bf16=True)
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, set()).add(output.dtype)
        return hook

    student = trainer.accelerator.unwrap_model(trainer.model)
    teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    assert next(teacher.parameters()).dtype == next(student.parameters()).dtype == torch.float32
    student.get_decoder().layers[0].mlp.down_proj.register_forward_hook(record("student"))
    teacher.get_decoder().layers[0].mlp.down_proj.register_forward_hook(record("teacher"))
    import curiosft_trl.sft.trainer as trainer_module

    gold = trainer_module.teacher_gold_logprobs  # the teacher head's logits arrive here (the head is an F.linear)
    monkeypatch.setattr(trainer_module, "teacher_gold_logprobs",
                        lambda logits, *a, **kw: record("teacher_head")(None, None, logits) or gold(logits, *a, **kw))
    trainer.train()
    assert seen == {"student": {torch.bfloat16}, "teacher": {torch.bfloat16}, "teacher_head": {torch.bfloat16}}


def test_the_teacher_head_is_gathered_once_per_micro_batch(tiny_model_dir, tiny_sft_file, tmp_path, monkeypatch):
    # Under ZeRO-3 a module called outside the engine gathers its weight on every call; the teacher's head runs once
    # per `teacher_chunk_size` tokens, so it is gathered explicitly, once per micro-batch (ZeRO-3 faked here)
    import contextlib

    import deepspeed

    import curiosft_trl.sft.teacher as teacher_module
    import curiosft_trl.sft.trainer as trainer_module

    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", max_steps=1,
                           teacher_chunk_size=16)
    head = trainer.accelerator.unwrap_model(trainer.teacher_model).get_output_embeddings()
    gathers, chunks = [], []
    monkeypatch.setattr(teacher_module, "is_deepspeed_zero3_enabled", lambda: True)
    monkeypatch.setattr(deepspeed.zero, "GatheredParameters",
                        lambda params, modifier_rank=None: gathers.append(list(params)) or contextlib.nullcontext())
    gold = trainer_module.teacher_gold_logprobs
    monkeypatch.setattr(trainer_module, "teacher_gold_logprobs",
                        lambda logits, *a, **kw: chunks.append(len(logits)) or gold(logits, *a, **kw))
    trainer.train()
    assert len(chunks) > 2, chunks  # several chunks in the one micro-batch
    assert sum(any(p is head.weight for p in params) for params in gathers) == 1


def _a_batch(trainer) -> dict:
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def test_the_teacher_head_gives_the_same_numbers_whatever_the_chunk_size(tiny_model_dir, tiny_sft_file, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft")
    batch = _a_batch(trainer)
    results = {}
    for size in (1, 7, 64, 100_000):  # a token per chunk, ragged chunks, the default of these tests, one chunk
        trainer.args.teacher_chunk_size = size
        results[size] = trainer._teacher_logprobs(trainer.teacher_model, batch)
    mask = batch["labels"][:, 1:] != -100
    assert mask.sum() > 64
    for q, tau, entropy in results.values():
        for got, want in zip((q, tau, entropy), results[100_000]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        assert (q[~mask] == 0).all() and (q[mask] < 0).all() and ((tau[mask] >= 1.1) & (tau[mask] <= 1.5)).all()


def test_one_teacher_chunk_and_many_give_the_same_loss_and_gradients(tiny_model_dir, tiny_sft_file, tmp_path):
    # A memory budget of ~10 tokens' buffers splits the micro-batch into many chunks; an ample one keeps it whole
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", teacher_chunk_size=None)
    batch, vocab = _a_batch(trainer), trainer.model.config.vocab_size
    tokens = int((batch["labels"][:, 1:] != -100).sum())
    results, sizes = {}, {}
    for name, budget_gib in (("many", 10 * vocab * 12 / 2**30), ("one", 64.0)):
        trainer.args.teacher_memory_budget_gib = budget_gib
        sizes[name] = trainer.teacher_chunk_tokens(tokens, vocab, batch["labels"].device)
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
    assert sizes["one"] == tokens and sizes["many"] == -(-tokens // -(-tokens // 10)) and sizes["many"] <= 10
    torch.testing.assert_close(results["many"][0], results["one"][0], rtol=1e-6, atol=0)
    for got, want in zip(results["many"][1], results["one"][1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_the_teacher_chunk_is_whole_on_a_gpu_and_256_tokens_on_the_cpu_unless_configured(
        tiny_model_dir, tiny_sft_file, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", teacher_chunk_size=None)
    cpu, cuda, vocab, per_token = torch.device("cpu"), torch.device("cuda", 0), 151_936, 151_936 * 12
    assert trainer.teacher_chunk_tokens(2048, vocab, cpu) == 256  # the CPU's chunks as before: the same numbers
    # On a GPU the budget is half the free memory: all 2,048 tokens where 4,096 tokens' buffers are free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4096 * per_token, 140 * 2**30))
    assert trainer.teacher_chunk_tokens(2048, vocab, cuda) == 2048
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2048 * per_token, 140 * 2**30))
    assert trainer.teacher_chunk_tokens(2048, vocab, cuda) == 1024
    trainer.args.teacher_memory_budget_gib = 512 * per_token / 2**30
    assert trainer.teacher_chunk_tokens(2048, vocab, cuda) == trainer.teacher_chunk_tokens(2048, vocab, cpu) == 512
    trainer.args.teacher_chunk_size = 64  # explicit control wins
    assert trainer.teacher_chunk_tokens(2048, vocab, cuda) == 64


def test_the_compiled_teacher_side_gives_the_eager_numbers(tiny_model_dir, tiny_sft_file, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", teacher_chunk_size=None)
    batch = _a_batch(trainer)
    eager = trainer._teacher_logprobs(trainer.teacher_model, batch)
    trainer.args.teacher_compile = True
    compiled = trainer._teacher_logprobs(trainer.teacher_model, batch)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_an_fp8_teacher_is_refused_where_the_device_cannot_run_it(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"teacher_fp8 needs a CUDA GPU of compute capability >= 8.9.*CPU"):
        CurioSFTConfig(output_dir=str(tmp_path), teacher_fp8=True, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"teacher_fp8: `sft_loss: curiosft_live_teacher` has no separate teacher"):
        CurioSFTConfig(output_dir=str(tmp_path), teacher_fp8=True, sft_loss="curiosft_live_teacher",
                       report_to="none")
    from curiosft_trl.sft.fp8 import check_fp8_supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"NVIDIA A100 is 8\.0"):
        check_fp8_supported(LOSSES["curiosft"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_fp8_supported(LOSSES["curiosft"])  # Hopper: accepted


def test_the_fp8_teacher_tracks_its_weights_through_a_sync(tiny_model_dir):
    # `torch._scaled_mm` also runs on the CPU, so the fp8 forward is checked here; its speed is a GPU matter
    from curiosft_trl.sft.fp8 import to_fp8_inference

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        keys = list(model.state_dict())
        assert to_fp8_inference(model) > 0 and list(model.state_dict()) == keys  # checkpoints unchanged
        fp8 = model(ids).logits
        assert not torch.equal(fp8, full) and (fp8 - full).abs().max() < 0.1 * full.abs().max()
        for p in model.get_decoder().parameters():  # a sync: `theta_T <- (1 - alpha) theta_T + alpha theta_S`, in place
            p.mul_(0.5)
        synced = model(ids).logits
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        for p in reference.get_decoder().parameters():
            p.mul_(0.5)
        want = reference(ids).logits
    assert (synced - want).abs().max() < (fp8 - want).abs().max(), "the fp8 copies were not re-quantised"


@pytest.mark.parametrize("setup", [dict(bf16=False), dict(bf16=True), dict(bf16=True, gradient_checkpointing=True)])
def test_the_live_teacher_reuses_the_students_forward(setup, tiny_model_dir, tiny_sft_file, tmp_path):
    # `curiosft_live_teacher`: the student, stop-gradient, is its own teacher; its backbone runs once per step (the
    # teacher reads the hidden states the student's forward computed), with the loss and gradients of the old path
    # that ran the backbone a second time
    from curiosft_trl.sft.losses import curiosft_loss_from_logprobs

    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft_live_teacher", **setup)
    model = trainer.model
    model.train()
    if trainer.args.gradient_checkpointing:  # as `Trainer.train` turns it on
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
        assert model.is_gradient_checkpointing
    batch = _a_batch(trainer)
    forwards = []
    model.get_decoder().register_forward_hook(lambda *args: forwards.append(1))
    # In training, accelerate runs the student's forward under this autocast (bf16 here: weights in fp32)
    with trainer.accelerator.autocast():
        loss = trainer.compute_loss(model, dict(batch))
    assert len(forwards) == 1
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    inputs = {**batch, "use_cache": False}
    with trainer.accelerator.autocast():
        outputs = model(**inputs, fused_lm_head=True)
    q, _, _ = trainer._teacher_logprobs(model, inputs)  # the old path: the backbone again, without gradient
    assert len(forwards) == 3
    per_token, _ = curiosft_loss_from_logprobs(outputs.log_probs, q)
    old = (per_token * outputs.label_mask).sum() / outputs.label_mask.sum()
    old.backward()
    assert loss.item() == old.item()
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_teacher_state_is_copied_to_host_memory_on_the_saving_rank_only(tiny_model_dir):
    from curiosft_trl.sft.teacher import teacher_state

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert teacher_state(model, keep=False) == {}
    full = teacher_state(model)
    assert set(full) == {n for n, _ in model.named_parameters()} and all(t.device.type == "cpu" for t in full.values())


@pytest.mark.parametrize("setup, message", [
    (dict(use_liger_kernel=True), "set use_liger_kernel: false"),
    (dict(parallelism=("cp_size", 2)), r"parallelism_config\.cp_size > 1"),
    (dict(parallelism=("sp_size", 2)), r"parallelism_config\.sp_size > 1"),
    (dict(parallelism=("tp_size", 2)), r"parallelism_config\.tp_size > 1"),
    (dict(zero3=True, peft=True), "PEFT under DeepSpeed ZeRO-3"),
    (dict(zero3=True, instance=True), "needs `model` as a path or hub id"),
])
def test_unsupported_setups_are_one_clear_error_before_any_model_loads(setup, message, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import transformers.integrations.deepspeed as hf_deepspeed

    from curiosft_trl.sft.trainer import check_supported

    args = CurioSFTConfig(output_dir=str(tmp_path), sft_loss="curiosft", use_cpu=True, report_to="none",
                          use_liger_kernel=setup.get("use_liger_kernel", False))
    if "parallelism" in setup:
        name, size = setup["parallelism"]
        args.parallelism_config = SimpleNamespace(**{"cp_size": 1, "sp_size": 1, "tp_size": 1, name: size})
    monkeypatch.setattr(hf_deepspeed, "is_deepspeed_zero3_enabled", lambda: setup.get("zero3", False))
    model = torch.nn.Linear(1, 1) if setup.get("instance") else "some/model"
    with pytest.raises(ValueError, match=message):
        check_supported(args, model, wraps_peft=setup.get("peft", False))
    args.sft_loss = "nll"  # TRL's own losses run TRL's code path: nothing to refuse
    check_supported(args, model, wraps_peft=setup.get("peft", False))


def test_an_moe_router_loss_is_refused(tiny_model_dir, tiny_sft_file, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.output_router_logits = True
    args = CurioSFTConfig(output_dir=str(tmp_path), sft_loss="entropy_reg", use_cpu=True, report_to="none")
    dataset = load_sft_dataset(str(tiny_sft_file), system_prompt=TINY_SYSTEM_PROMPT)
    with pytest.raises(ValueError, match="output_router_logits"):
        CurioSFTTrainer(model=model, args=args, train_dataset=dataset)


def test_the_model_card_names_curiosft_and_cites_the_paper(tiny_model_dir, tiny_sft_file, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", max_steps=1)
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "CurioSFT" in card and "2602.02244" in card and "Learning While Staying Curious" in card


def test_checkpoints_are_pushed_to_the_hub_without_the_teacher(tiny_model_dir, tiny_sft_file, tmp_path, monkeypatch):
    import transformers.trainer
    from huggingface_hub.utils import filter_repo_objects

    trainer = make_trainer(tiny_model_dir, tiny_sft_file, tmp_path, sft_loss="curiosft", max_steps=1,
                           save_strategy="steps", save_steps=1)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-1"
    assert (checkpoint / TEACHER_DIR / TEACHER_WEIGHTS).is_file()
    uploads = []

    class FakeHub:
        def upload_folder(self, **kwargs):
            uploads.append(kwargs)

    monkeypatch.setattr(transformers.trainer, "hf_api", FakeHub)
    trainer.hub_model_id, trainer.args.hub_strategy, trainer.push_in_progress = "user/model", "checkpoint", None
    trainer._push_from_checkpoint(str(checkpoint))
    pushed = next(u for u in uploads if u["folder_path"] == str(checkpoint))
    files = [str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file()]
    kept = list(filter_repo_objects(files, ignore_patterns=pushed["ignore_patterns"]))
    assert "model.safetensors" in kept and not any(f.startswith(TEACHER_DIR) for f in kept)
    assert transformers.trainer.hf_api is FakeHub  # the patch is undone after the push
