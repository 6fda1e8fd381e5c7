"""Every recipe, run the way its header says: it parses with its stage's CLI, never trains in pure bf16, and the paper
recipes hold the authors' GRPO settings and batch arithmetic on the processes their command launches.

A recipe's header comment is the contract: the commands in it that run the recipe (`make sft|rl|eval RECIPE=...`,
`accelerate launch ... --config <recipe>`) decide the process count (the accelerate config's `num_processes`), the
precision regime (DeepSpeed or not) and the command-line overrides (`ARGS="..."`, trailing flags).
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from curiosft_trl.cli import claims as claims_cli
from curiosft_trl.cli import eval as eval_cli
from curiosft_trl.cli import rl as rl_cli
from curiosft_trl.cli import sft as sft_cli
from curiosft_trl.cli import study as study_cli
from curiosft_trl.study.runs import cli_flags

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)
# "auto", and None (transformers 5's `from_pretrained` default is "auto"): the checkpoint's own dtype, bf16 for every
# Qwen2.5 release. An unset recipe field is ModelConfig's "float32".
LOW_PRECISION = ("bfloat16", "float16", "auto", None)
COMMAND_STARTS = ("make sft", "make rl", "make eval", "make claims", "make study", "accelerate launch", "curiosft-sft",
                  "curiosft-rl", "curiosft-eval", "curiosft-claims", "curiosft-study")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def stage(recipe: Path) -> str:
    for prefix, name in (("eval", "eval"), ("grpo", "rl"), ("claims", "claims"), ("study", "study")):
        if recipe.name.startswith(prefix):
            return name
    return "sft"


def makefile_defaults() -> dict[str, str]:
    """`make sft|rl|eval` without RECIPE= runs the Makefile's default recipe of that target."""
    text = (ROOT / "Makefile").read_text()
    return {f"make {target}": recipe for target, recipe in re.findall(r"^(\w+): RECIPE \?= (\S+)$", text, re.M)}


@dataclass
class Command:
    text: str
    accelerate: Path | None  # the accelerate config it launches with; None: one process, no DeepSpeed
    overrides: list[str]  # recipe fields it overrides on the command line

    @property
    def processes(self) -> int:
        return yaml.safe_load(self.accelerate.read_text())["num_processes"] if self.accelerate else 1


def header_commands(recipe: Path) -> list[Command]:
    """The commands in the recipe's header comment that run this recipe (continuation lines joined)."""
    header = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    joined = re.sub(r"\\\s*\n\s*", " ", "\n".join(header))
    starts = "|".join(re.escape(s) for s in COMMAND_STARTS)
    defaults, commands = makefile_defaults(), []
    for text in re.findall(rf"(?:{starts})[^`(\n]*", joined):  # a command ends at a backtick, "(" or the line end
        text = text.strip()
        try:
            words = shlex.split(text)
        except ValueError:
            continue
        recipe_arg = words[words.index("--config") + 1] if "--config" in words[:-1] else None
        named = next((w.split("=", 1)[1] for w in words if w.startswith("RECIPE=")), None)
        default = defaults.get(" ".join(words[:2])) if words[0] == "make" and named is None else None
        if rel(recipe) not in (recipe_arg, named, default):
            continue
        config = next((w.split("=", 1)[1] for w in words if w.startswith("ACCELERATE=")), None)
        if "--config_file" in words:
            config = words[words.index("--config_file") + 1]
        overrides = next((shlex.split(w.split("=", 1)[1]) for w in words if w.startswith("ARGS=")), [])
        for variable, flag in [("MODEL=", "--model_name_or_paths"), ("SUITE=", "--benchmarks")]:  # make eval's
            overrides += next(([flag, *w.split("=", 1)[1].split()] for w in words if w.startswith(variable)), [])
        if recipe_arg:  # flags after `--config <recipe>` override it
            overrides += words[words.index("--config") + 2:]
        commands.append(Command(text, ROOT / config if config else None, overrides))
    return commands


def parse(recipe: Path, overrides: list[str] = ()):
    """The stage's own CLI parser. GPU recipes ask for bf16, which TrainingArguments refuses on a CPU: off here, the
    recipe's own value is read from its YAML."""
    argv = ["--config", str(recipe), *overrides]
    if stage(recipe) == "eval":
        return eval_cli.parse_args(argv)
    if stage(recipe) == "claims":  # the claims recipe, then the SFT recipe every arm runs, as each arm runs it
        cfg = claims_cli.load_config(claims_cli.parse_args(argv))
        for arm in cfg.arms.values():
            parse(ROOT / cfg.sft_recipe, cli_flags({**cfg.sft, **arm.loss}))
        return cfg
    if stage(recipe) == "study":  # the study recipe, then each stage's recipe as every arm runs it
        cfg = study_cli.load_config(study_cli.parse_args(argv))
        for arm in cfg.arms.values():
            parse(ROOT / cfg.sft_recipe, cli_flags({**cfg.sft, **arm.loss}))
        parse(ROOT / cfg.rl_recipe, cli_flags(cfg.rl))
        parse(ROOT / cfg.eval_recipe, cli_flags(cfg.eval))
        return cfg
    if yaml.safe_load(recipe.read_text()).get("bf16"):
        argv += ["--bf16", "false"]
    return (sft_cli if stage(recipe) == "sft" else rl_cli).parse_args(argv)


def recipe_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def runs(recipes):
    """(recipe, command) for every command that each recipe's header gives for it."""
    return [pytest.param(r, c, id=f"{recipe_id(r)}: {c.text[:60]}") for r in recipes for c in header_commands(r)]


TRAINING = [r for r in RECIPES if stage(r) in ("sft", "rl")]
GRPO = [r for r in RECIPES if stage(r) == "rl"]
PAPER_GRPO = [r for r in GRPO if "tiny" not in r.parts]
GPU_MODELS = ("qwen2.5-math-7b", "qwen2.5-math-1.5b")


# ------------------------------------------------------------------------------------------------- every recipe


@pytest.mark.parametrize("recipe", RECIPES, ids=recipe_id)
def test_every_recipe_parses_and_its_header_says_how_to_run_it(recipe):
    assert recipe.read_text().startswith("#")
    commands = header_commands(recipe)
    assert commands, f"{rel(recipe)}: the header names no command that runs it"
    for command in commands:
        parse(recipe, command.overrides)
        if command.accelerate:
            assert command.accelerate.is_file(), command.text


# ------------------------------------------------------------------------------------------ item: no pure bf16


def pure_bf16(dtype: str | None, accelerate: Path | None, deepspeed: str | dict | None) -> str | None:
    """Why AdamW would update low-precision weights in place (most small updates then round away), or None.

    Without DeepSpeed, the loaded model's weights are the optimizer's master weights: they must be float32 (`bf16: true`
    then autocasts the forward). Under DeepSpeed with bf16 mixed precision the weights may be bf16: its ZeRO optimizer
    keeps fp32 master partitions (`master_weights_and_grads_dtype` float32 unless `bf16_master_weights_and_grads`) and
    fp32 Adam states, upcast from the bf16 weights once.
    """
    if dtype not in LOW_PRECISION:
        return None
    if deepspeed:
        return None  # a DeepSpeed JSON in the recipe itself
    if accelerate is None:
        return f"dtype {dtype} without DeepSpeed: AdamW would update {dtype} weights"
    config = yaml.safe_load(accelerate.read_text())
    if config.get("distributed_type") != "DEEPSPEED":
        return f"dtype {dtype} under {accelerate.name}, which is not DeepSpeed: no fp32 master weights"
    if config.get("mixed_precision") != "bf16" or config.get("deepspeed_config", {}).get("bf16_master_weights_and_grads"):
        return f"dtype {dtype} under {accelerate.name} without DeepSpeed's bf16 mode and its fp32 master weights"
    return None


@pytest.mark.parametrize("recipe, command", runs(TRAINING))
def test_no_recipe_trains_in_pure_bf16(recipe, command):
    _, training_args, model_args = parse(recipe, command.overrides)
    dtype = (training_args.model_init_kwargs or {}).get("dtype", model_args.dtype)
    reason = pure_bf16(dtype, command.accelerate, training_args.deepspeed)
    assert reason is None, f"{rel(recipe)} run as `{command.text}`: {reason}"
    if any(model in recipe.parts for model in GPU_MODELS):
        assert yaml.safe_load(recipe.read_text())["bf16"] is True  # bf16 compute: autocast, or DeepSpeed's bf16 mode


def test_pure_bf16_check_tells_the_regimes_apart():
    zero3 = ROOT / "recipes" / "accelerate" / "zero3.yaml"
    assert pure_bf16("bfloat16", None, None)  # the one-GPU recipes before this check
    assert pure_bf16("auto", None, None)  # a Qwen2.5 checkpoint's own dtype is bf16
    assert pure_bf16(None, None, None)  # transformers' own default is "auto"
    assert pure_bf16("float32", None, None) is None
    assert pure_bf16("bfloat16", zero3, None) is None  # DeepSpeed bf16: fp32 master weights
    assert pure_bf16("bfloat16", None, "ds_config.json") is None


def test_deepspeed_without_its_bf16_mode_is_flagged(tmp_path):
    for field, value in [("mixed_precision", "no"), ("distributed_type", "MULTI_GPU")]:
        config = yaml.safe_load((ROOT / "recipes" / "accelerate" / "zero3.yaml").read_text())
        config[field] = value
        path = tmp_path / f"{value}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert pure_bf16("bfloat16", path, None)
        assert pure_bf16("float32", path, None) is None


def test_accelerate_configs_keep_fp32_master_weights():
    """Every DeepSpeed config the recipes launch with runs DeepSpeed's bf16 mode with its default fp32 masters."""
    for path in (ROOT / "recipes" / "accelerate").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["distributed_type"] == "DEEPSPEED" and config["mixed_precision"] == "bf16"
        assert not config["deepspeed_config"].get("bf16_master_weights_and_grads")


# -------------------------------------------------------------------------------------- item: end of turn, template


@pytest.mark.parametrize("recipe", [r for r in TRAINING if stage(r) == "sft" and any(m in r.parts for m in GPU_MODELS)],
                         ids=recipe_id)
def test_real_model_sft_recipes_state_the_end_of_turn_and_the_think_template(recipe):
    """The SFT checkpoint's tokenizer and generation config carry `<|im_end|>` (so vLLM in GRPO and evaluation stops
    at the end of the answer) and the template that opens `<think>` (prompts.py's convention)."""
    _, training_args, _ = parse(recipe)
    assert training_args.eos_token == "<|im_end|>"
    assert training_args.chat_template_path == "recipes/chat_templates/qwen-think.jinja"
    assert (ROOT / training_args.chat_template_path).is_file()


# --------------------------------------------------------------------------------------- item: the GRPO settings


@pytest.mark.parametrize("recipe", PAPER_GRPO, ids=recipe_id)
def test_paper_grpo_recipes_hold_the_authors_settings(recipe):
    """HaoooWang/CurioSFT `scripts/2_rl.sh` on verl (`custom_verl/recipe/curio_sft`): rollout n=8 at temperature 1.0,
    top_p 1; advantages (r - group mean) / group std (`adv_estimator=grpo`, `norm_adv_by_std_in_grpo` default True);
    token sum / constant max response length; no KL, no entropy bonus; clip 0.2; one pass per rollout batch; AdamW
    lr 1e-6 constant, weight decay 0.01, grad clip 1.0; old log-probs recomputed by the trainer, no vLLM importance
    sampling correction."""
    _, args, _ = parse(recipe)
    assert args.use_vllm and not args.vllm_importance_sampling_correction
    assert (args.loss_type, args.scale_rewards, args.beta) == ("dr_grpo", "group", 0.0)
    assert (args.num_generations, args.temperature, args.top_p, args.top_k) == (8, 1.0, 1.0, 0)
    assert (args.epsilon, args.epsilon_high, args.num_iterations) == (0.2, None, 1)
    assert args.entropy_coef == 0.0 and args.top_entropy_quantile == 1.0 and not args.mask_truncated_completions
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps) == (1e-6, "constant", 0)
    assert (args.weight_decay, args.max_grad_norm) == (0.01, 1.0)
    if args.vllm_mode == "colocate":
        # the authors' prompts are at most 1024 tokens; vLLM must fit one with a whole completion
        assert args.vllm_enable_sleep_mode and args.vllm_max_model_length >= 1024 + args.max_completion_length


# prompts per rollout batch, optimizer steps per rollout batch: as each recipe's batch-arithmetic comment says
ROLLOUT = {"qwen2.5-math-7b/grpo.yaml": (128, 4), "qwen2.5-math-7b/grpo-vllm-server.yaml": (128, 4),
           "qwen2.5-math-1.5b/grpo.yaml": (32, 4), "smollm2-135m/grpo.yaml": (32, 4), "tiny/grpo.yaml": (8, 2)}


@pytest.mark.parametrize("recipe, command", runs(GRPO))
def test_grpo_batch_arithmetic_of_every_run_command(recipe, command):
    """With the processes the command launches and its overrides (the server recipe's one-node command included),
    each rollout batch has the documented prompts and optimizer steps; the authors' 7B run: 128 prompts (x 8) per
    rollout batch, mini-batches of 32 prompts, so 4 optimizer steps of 256 completions."""
    _, args, _ = parse(recipe, command.overrides)
    completions = args.per_device_train_batch_size * command.processes * args.steps_per_generation
    per_step = args.per_device_train_batch_size * command.processes * args.gradient_accumulation_steps
    assert completions % args.num_generations == 0 and completions % per_step == 0, command.text
    assert (completions // args.num_generations, completions // per_step) == ROLLOUT[recipe_id(recipe)], command.text
    if "qwen2.5-math-7b" in recipe.parts:
        assert per_step == 256 and args.max_completion_length == 8192


# Shapes for the colocated vLLM memory arithmetic: (bf16 weight GiB, KV-cache KiB per token)
VLLM_SHAPES = {"qwen2.5-math-7b": (7.62e9 * 2 / 2**30, 28 * 4 * 128 * 2 * 2 / 2**10),
               "qwen2.5-math-1.5b": (1.54e9 * 2 / 2**30, 28 * 2 * 128 * 2 * 2 / 2**10),
               "smollm2-135m": (0.135e9 * 2 / 2**30, 30 * 3 * 64 * 2 * 2 / 2**10)}
GPU_GIB, VLLM_OVERHEAD_GIB = 79.6, 2.0  # an 80 GB H100/A100; activations, sampler and CUDA graphs


@pytest.mark.parametrize("recipe", [r for r in PAPER_GRPO if yaml.safe_load(r.read_text())["vllm_mode"] == "colocate"],
                         ids=recipe_id)
def test_colocated_vllm_has_room_for_the_rollout(recipe):
    """The recipe comment's arithmetic: vLLM's KV cache holds at least 40% of this GPU's rollout sequences at their
    full length (0.35 on the 7B held 18%), and vLLM leaves training at least 20 GiB while it generates."""
    _, args, _ = parse(recipe)
    model = next(m for m in VLLM_SHAPES if m in recipe.parts)
    weights_gib, kib_per_token = VLLM_SHAPES[model]
    kv_tokens = (args.vllm_gpu_memory_utilization * GPU_GIB - weights_gib - VLLM_OVERHEAD_GIB) * 2**20 / kib_per_token
    sequences = args.per_device_train_batch_size * args.steps_per_generation  # generated on each GPU
    full_length = min(args.vllm_max_model_length, 1024 + args.max_completion_length)
    assert kv_tokens >= 0.4 * sequences * full_length
    assert (1 - args.vllm_gpu_memory_utilization) * GPU_GIB >= 20
