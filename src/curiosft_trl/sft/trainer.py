"""`CurioSFTTrainer`: TRL's `SFTTrainer` with one seam overridden, `compute_loss`, plus the teacher's lifecycle.

Per response token (spec, "The loss"): `L_t = -l_t + kd_coef * 0.5 * (l_t - q_t)^2`, where `l_t` comes from
TRL's fused LM head (no `(batch, seq, vocab)` logits for the student) and `q_t` from the teacher's LM head applied
to the response tokens, in chunks (on a GPU one, unless its `(tokens, vocab)` buffers would exceed the memory budget:
`teacher_chunk_tokens`), each chunk read by `teacher_gold_logprobs` in one top-k and one sweep over the vocabulary.
"""

import copy
import json
import os
import textwrap
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers.trainer
from torch.profiler import record_function
from transformers import PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import SFTTrainer
from trl.models import prepare_deepspeed
from trl.models.utils import _ForwardRedirection
from trl.trainer.utils import create_model_from_path

from ..model_card import name_base_model
from .config import CurioSFTConfig
from .fp8 import to_fp8_inference
from .losses import IGNORE_INDEX, compiled_teacher_gold_logprobs, plan_teacher_chunks, teacher_gold_logprobs
from .teacher import TEACHER_DIR, TeacherSyncCallback, freeze, gathered_head, load_teacher, save_teacher


class CurioSFTTrainer(SFTTrainer):
    """[`~trl.SFTTrainer`] whose loss is chosen by `args.sft_loss`, run as its entry in `losses.LOSSES` says.

    For a loss that `needs_teacher` (`curiosft`, `curiosft_fixed_tau`) the teacher is a separate frozen copy of the
    model, loaded from the same checkpoint (or copied from the model instance), prepared for DeepSpeed like TRL
    prepares GKD's teacher, synced on the student's trainable parameters by TRL's `SyncRefModelCallback`
    (`TeacherSyncCallback`), and saved with every checkpoint. With a `peft_config`, the teacher is a copy of the
    student as PEFT wrapped it, adapters included: at step 0 the adapters are the identity (LoRA's B is zero), so the
    teacher is the initial model. A loss that distils without a copy (`curiosft_live_teacher`) reads the live model.
    """

    _tag_names = ["trl", "sft", "curiosft"]
    _name = "CurioSFT"
    _paper = {
        "title": "Learning While Staying Curious: Entropy-Preserving Supervised Fine-Tuning via Adaptive "
        "Self-Distillation for Large Reasoning Models",
        "id": "2602.02244",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{wang2026curiosft,
                title        = {{Learning While Staying Curious: Entropy-Preserving Supervised Fine-Tuning via Adaptive Self-Distillation for Large Reasoning Models}},
                author       = {Wang and Gu and Piao and Gong and Ye and Yue and Han and Guo and Wu},
                year         = 2026,
                booktitle    = {Proceedings of the 64th Annual Meeting of the Association for Computational Linguistics (ACL)},
                eprint       = {arXiv:2602.02244},
            }"""),
    }

    def __init__(self, model, args: CurioSFTConfig | None = None, *pargs, **kwargs):
        if args is None or not isinstance(args, CurioSFTConfig):
            raise TypeError("CurioSFTTrainer needs a CurioSFTConfig as `args`.")
        # The teacher starts as the *initial* model: copy an instance before SFTTrainer can touch it (unless PEFT
        # is about to wrap it: then the wrapped student is copied below)
        teacher = None
        wraps_peft = kwargs.get("peft_config") is not None
        check_supported(args, model, wraps_peft)
        if args.loss.needs_teacher and not isinstance(model, str) and not wraps_peft:
            teacher = copy.deepcopy(model)
        super().__init__(model, args, *pargs, **kwargs)
        self.teacher_model = None
        if args.loss.needs_teacher:
            if wraps_peft:
                teacher = copy.deepcopy(self.model)
            elif isinstance(model, str):
                teacher = self._load_teacher_like_model(model)
            self.teacher_model = self._prepare_teacher(freeze(teacher))
            if args.teacher_fp8:  # after preparation: the fp8 copies are made on the teacher's device
                to_fp8_inference(self.accelerator.unwrap_model(self.teacher_model))
            self.add_callback(TeacherSyncCallback(ref_model=self.teacher_model, accelerator=self.accelerator))
        if not args.loss.trl_native and getattr(self.model.config, "output_router_logits", False):
            raise ValueError(f"sft_loss: `{args.sft_loss}` does not add the router (load-balancing) loss that this "
                             "MoE model's `output_router_logits: true` asks for; set it to false in the model's "
                             "config, or use `nll`.")
        self._forward_redirection = _ForwardRedirection()

    def _load_teacher_like_model(self, model_id: str) -> PreTrainedModel:
        """Load the teacher exactly as `SFTTrainer` loaded the student."""
        kwargs = dict(self.args.model_init_kwargs or {})
        if self.args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
            kwargs["device_map"] = None
        kwargs.setdefault("trust_remote_code", self.args.trust_remote_code)
        return create_model_from_path(model_id, **kwargs)

    def _teacher_param_names(self) -> set[str] | None:
        """The teacher parameters that can differ from the student's initial ones: the student's trainable ones
        under PEFT (frozen base weights are equal in both and stay so under the sync), else all (None)."""
        student = self.accelerator.unwrap_model(self.model)
        if not hasattr(student, "peft_config"):
            return None
        return {name for name, p in student.named_parameters() if p.requires_grad}

    def _prepare_teacher(self, teacher: PreTrainedModel):
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    # ---- the loss -------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args, sft_loss = self.args, self.args.loss
        if sft_loss.trl_native:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise NotImplementedError("CurioSFTTrainer does not return logits; use `prediction_loss_only=True`.")
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        live = sft_loss.distils and not sft_loss.needs_teacher
        # The live teacher is the student, stop-gradient: its hidden states are the ones this forward computes, so
        # they are kept (detached) instead of running the backbone a second time. TRL's fused head returns per-token
        # log-probs, never the logits, and the temperature rule needs whole rows of them: the head is applied again,
        # forward only, on the response tokens
        with _captured_last_hidden_state(self.accelerator.unwrap_model(model), enabled=live) as captured:
            outputs = model(**inputs, fused_lm_head=True)
        log_probs, entropy, mask = outputs.log_probs, outputs.entropy, outputs.label_mask  # (B, T-1) each
        fields = {name: getattr(args, name) for name in sft_loss.fields}
        if sft_loss.distils:
            teacher = model if live else self.teacher_model
            teacher_logprobs, tau, teacher_entropy = self._teacher_logprobs(teacher, inputs, captured.get("hidden"))
            per_token, distill = sft_loss.per_token(log_probs, teacher_logprobs, **fields)
            metrics = self._distillation_metrics(mask, log_probs, distill, tau, teacher_entropy)
        else:
            per_token, bonus_mask = sft_loss.per_token(log_probs, entropy, mask, **fields)
            metrics = {"nll": (-log_probs.detach() * mask).sum(), "entropy_bonus_frac": bonus_mask.sum().float()}
        num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
        # Clamped so that a batch without loss tokens reduces to a finite zero rather than 0 / 0
        loss = (per_token * mask).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        # As in `Trainer.compute_loss`: `num_items_in_batch` counts the tokens of every rank and DDP averages the
        # gradients across ranks, so scale back up; without this a 2-process run trains with half the loss
        if args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        self._log_token_metrics(mode, inputs, outputs, metrics)
        return loss

    @torch.no_grad()
    def _teacher_logprobs(self, teacher, inputs, hidden: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher log-prob of each gold next token at its temperature: `(B, T-1)` for q, tau and entropy.

        The backbone runs once, unless its `(B, T, H)` last hidden states are given (the live teacher's come from the
        student's forward); the LM head runs on the response tokens only, `teacher_chunk_tokens` at a time.
        """
        unwrapped = self.accelerator.unwrap_model(teacher)
        if hidden is None:
            backbone_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
            # The redirection bypasses the forward that accelerate wrapped in autocast, so autocast is entered here:
            # with fp32 weights and `bf16: true` the teacher then runs in bf16 like the student (no-op otherwise)
            with self.accelerator.autocast(), record_function("curiosft.teacher_backbone"):
                # Routed through the wrapper's forward so that DeepSpeed ZeRO-3 gathers the teacher's sharded params
                hidden = self._forward_redirection(teacher, unwrapped, _last_hidden_state, unwrapped,
                                                   **backbone_inputs)
        labels = inputs["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        hidden, targets = hidden[:, :-1][mask], labels[mask]  # (N, H), (N,)
        q, tau, entropy = (torch.zeros(mask.shape, dtype=torch.float32, device=mask.device) for _ in range(3))
        rule = self.args.temperature_rule
        fixed_tau = self.args.fixed_tau if self.args.loss.fixed_tau else None
        gold_logprobs = compiled_teacher_gold_logprobs() if self.args.teacher_compile else teacher_gold_logprobs
        chunks = []
        with gathered_head(unwrapped.get_output_embeddings()) as (weight, bias):
            size = self.teacher_chunk_tokens(targets.numel(), weight.size(0), weight.device)
            for start in range(0, targets.numel(), size):
                with self.accelerator.autocast(), record_function("curiosft.teacher_head"):
                    logits = F.linear(hidden[start:start + size].to(weight.device), weight, bias)  # (chunk, V)
                with record_function("curiosft.teacher_temperature_and_logprob"):
                    chunks.append(gold_logprobs(logits, targets[start:start + size], rule, fixed_tau=fixed_tau))
        if chunks:
            q[mask], tau[mask], entropy[mask] = (torch.cat(values).to(mask.device) for values in zip(*chunks))
        return q, tau, entropy

    def teacher_chunk_tokens(self, tokens: int, vocab: int, device: torch.device) -> int:
        """Tokens per teacher head chunk: `teacher_chunk_size` where set; else planned from `teacher_memory_budget_gib`
        (`plan_teacher_chunks`), which defaults to half the GPU's free memory; on the CPU without a budget, 256."""
        args = self.args
        if args.teacher_chunk_size is not None:
            return args.teacher_chunk_size
        if args.teacher_memory_budget_gib is not None:
            budget = args.teacher_memory_budget_gib * 2**30
        elif device.type == "cuda":
            budget = torch.cuda.mem_get_info(device)[0] / 2
        else:  # the CPU's chunks of every run so far (same numbers); its blocks inside a chunk are cache-sized
            return CPU_TEACHER_CHUNK
        return plan_teacher_chunks(tokens, vocab, budget)

    def _distillation_metrics(self, mask, log_probs, distill, tau, teacher_entropy) -> dict[str, torch.Tensor]:
        """Sums over this batch's loss tokens, of the quantities the paper and its ablations track."""
        args = self.args
        m = mask.float()
        return {
            "nll": (-log_probs.detach() * m).sum(),
            "distill": (distill.detach() * m).sum(),
            "tau/mean": (tau * m).sum(),
            "tau/frac_min": ((tau <= args.tau_min) * m).sum(),
            "tau/frac_max": ((tau >= args.tau_max) * m).sum(),
            "teacher_entropy": (teacher_entropy * m).sum(),
            "frac_low_entropy": ((teacher_entropy <= args.low_entropy_threshold) * m).sum(),
            "tau/min": torch.where(mask, tau, torch.inf).min() if mask.any() else tau.new_tensor(torch.inf),
            "tau/max": torch.where(mask, tau, -torch.inf).max() if mask.any() else tau.new_tensor(-torch.inf),
        }

    def _log_token_metrics(self, mode, inputs, outputs, extra: dict[str, torch.Tensor]) -> None:
        """TRL's `entropy`, `mean_token_accuracy` and `num_tokens` (as in `SFTTrainer.compute_loss`), plus `extra`:
        sums averaged over the loss tokens of all processes, and the tau extremes reduced across them."""
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(outputs.label_mask.sum()).sum()
        denom = num_valid.clamp(min=1)
        self._metrics[mode]["entropy"].append((gather(outputs.entropy.detach().sum()).sum() / denom).item())
        self._metrics[mode]["mean_token_accuracy"].append((gather(outputs.is_top1.sum()).sum() / denom).item())
        for name, value in extra.items():
            if name == "tau/min":
                reduced = gather(value.reshape(1)).min()
            elif name == "tau/max":
                reduced = gather(value.reshape(1)).max()
            else:
                reduced = gather(value.reshape(1)).sum() / denom
            if torch.isfinite(reduced):
                self._metrics[mode][name].append(reduced.item())
        if mode == "train":
            # Padding-free batches carry `position_ids` instead of an attention mask, as in `SFTTrainer`
            mask = inputs.get("attention_mask")
            local = mask.sum() if mask is not None else torch.tensor(inputs["position_ids"].size(1))
            self._total_train_tokens += gather(local.to(outputs.entropy.device)).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    # ---- the teacher in checkpoints -------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        # Written before the trainer state, which marks a checkpoint complete, so every checkpoint has its teacher
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.teacher_model is not None:
            save_teacher(self.accelerator.unwrap_model(self.teacher_model), folder, self.args.should_save,
                         names=self._teacher_param_names())
        if self.args.should_save:  # TRL's `num_tokens` count, which `TrainerState` does not carry
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, TOKENS_FILE), "w") as f:
                json.dump({"total_train_tokens": self._total_train_tokens}, f)
        super()._save_checkpoint(model, trial)

    def _push_from_checkpoint(self, checkpoint_folder):
        # The teacher is training state, like the optimizer: it stays in local checkpoints, never on the hub
        with _uploads_without_teacher():
            super()._push_from_checkpoint(checkpoint_folder)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # The one resume hook that every backend (plain, DDP, DeepSpeed) reaches after the models are prepared
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if self.teacher_model is not None:
            load_teacher(self.accelerator.unwrap_model(self.teacher_model), checkpoint,
                         names=self._teacher_param_names())
        tokens = os.path.join(checkpoint, TOKENS_FILE)
        if os.path.isfile(tokens):  # checkpoints written before this file existed restart the count at 0
            with open(tokens) as f:
                self._total_train_tokens = json.load(f)["total_train_tokens"]

    def _issue_warnings_after_load(self, load_result):
        # Tied weights (an LM head sharing the embedding) are saved once, so a resume "misses" them; they are
        # restored by the tie, which is not corruption: leave them out of transformers' warning
        params = dict(self.model.named_parameters(remove_duplicate=False))
        shared = {id(p) for name, p in params.items() if name not in load_result.missing_keys}
        missing = [k for k in load_result.missing_keys if k not in params or id(params[k]) not in shared]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, naming the loss that trained (CurioSFT and its paper only for a CurioSFT loss) and the
        base model when it is a local folder (`model_card.name_base_model`)."""
        from .losses import LOSSES

        loss = LOSSES[self.args.sft_loss]
        if loss.name != "curiosft":  # an instance attribute: TRL's card reads `self._name` and `self._paper`
            self._name = (f"CurioSFT's ablation `sft_loss: {loss.name}` ({loss.description})" if loss.distils
                          else f"supervised fine-tuning, `sft_loss: {loss.name}` ({loss.description})")
            self._paper = self._paper if loss.distils else {}
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        name_base_model(Path(self.args.output_dir) / "README.md", self.model.config,
                        self.hub_model_id or self.args.output_dir)


TOKENS_FILE = "curiosft_tokens.json"
CPU_TEACHER_CHUNK = 256  # tokens per teacher head chunk on the CPU, unless configured


def check_supported(args: CurioSFTConfig, model, wraps_peft: bool) -> None:
    """One clear error, before any model is loaded or copied, for setups this trainer would run wrong or not at all."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    loss = f"sft_loss: `{args.sft_loss}`"
    if args.loss.trl_native:
        return
    if args.use_liger_kernel:
        raise ValueError(f"{loss} computes its own token log-probs, which Liger's patched forward does not return; "
                         "set use_liger_kernel: false.")
    parallelism = getattr(args, "parallelism_config", None)
    for size in ("cp_size", "sp_size", "tp_size"):
        if getattr(parallelism, size, 1) > 1:
            raise ValueError(f"{loss} does not support parallelism_config.{size} > 1: the loss is normalised over "
                             "whole sequences on data-parallel ranks only. Use data parallelism (DDP or DeepSpeed).")
    if args.teacher_fp8 and is_deepspeed_zero3_enabled():
        raise ValueError("teacher_fp8 under DeepSpeed ZeRO-3 is not supported: the teacher's weights are partitioned, "
                         "so there is no whole weight to quantise. Use ZeRO-2 or no DeepSpeed.")
    if args.loss.needs_teacher and is_deepspeed_zero3_enabled():
        if wraps_peft:
            raise ValueError(f"{loss} with PEFT under DeepSpeed ZeRO-3 is not supported: the teacher is a deep copy "
                             "of the adapted student, which ZeRO-3 has partitioned. Use ZeRO-2 or no DeepSpeed.")
        if not isinstance(model, str):
            raise ValueError(f"{loss} under DeepSpeed ZeRO-3 needs `model` as a path or hub id, not a model "
                             "instance: the teacher is loaded like the student, and a partitioned instance cannot "
                             "be copied.")


class _TeacherlessHub:
    """An `HfApi` whose folder uploads skip the teacher."""

    def __init__(self, api):
        self._api = api

    def __getattr__(self, name):
        return getattr(self._api, name)

    def upload_folder(self, *args, ignore_patterns=None, **kwargs):
        return self._api.upload_folder(*args, ignore_patterns=[*(ignore_patterns or []), f"{TEACHER_DIR}/*"], **kwargs)


@contextmanager
def _uploads_without_teacher():
    """`Trainer._push_from_checkpoint` uploads whole checkpoint folders through `transformers.trainer.hf_api()`."""
    real = transformers.trainer.hf_api
    transformers.trainer.hf_api = lambda: _TeacherlessHub(real())
    try:
        yield
    finally:
        transformers.trainer.hf_api = real


def _last_hidden_state(model: PreTrainedModel, **inputs) -> torch.Tensor:
    """`(B, T, H)` last hidden states of a causal LM's backbone (no LM head)."""
    return model.get_decoder()(**inputs, use_cache=False).last_hidden_state


@contextmanager
def _captured_last_hidden_state(model: PreTrainedModel, enabled: bool = True):
    """A dict whose `"hidden"` is, after `model`'s forward within the context, the `(B, T, H)` last hidden states of
    its backbone (the module `_last_hidden_state` runs), detached; left empty when `enabled` is false.

    TRL's fused forward calls the model's `base_model`, which is `get_decoder()` for causal LMs; for a model where
    the hook would not fire, the dict stays empty and `_teacher_logprobs` runs the backbone itself, as before."""
    captured = {}
    if not enabled:
        yield captured
        return

    def keep(module, args, output):
        captured["hidden"] = output[0].detach()

    handle = model.get_decoder().register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()
