# The user interface: every target calls a CLI of the package; no logic lives here.
VENV     ?= .venv
BIN      := $(VENV)/bin
RECIPE   ?= recipes/tiny/curiosft.yaml
# An accelerate config (recipes/accelerate/*.yaml) launches the run on several processes / GPUs / nodes
ACCELERATE ?=
TINY     ?= outputs/tiny
OFFLINE  := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

SFT_CMD  := $(if $(ACCELERATE),$(BIN)/accelerate launch --config_file $(ACCELERATE) -m curiosft_trl.cli.sft,$(BIN)/curiosft-sft)

.PHONY: install tiny sft test bench clean

install: $(VENV)/.installed

# torch is pinned in the same pip command, so that pip takes the CPU wheel rather than resolving a CUDA build.
# deepspeed is an sdist: DS_BUILD_OPS=0 builds its ops just in time, on the machine that needs them.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	DS_BUILD_OPS=0 $(BIN)/pip install torch==2.13.0 -e '.[test,deepspeed]'
	touch $@

tiny: install
	$(BIN)/curiosft-tiny --output_dir $(TINY)

sft: install $(if $(findstring recipes/tiny/,$(RECIPE)),tiny)
	$(SFT_CMD) --config $(RECIPE)

test: install
	$(OFFLINE) $(BIN)/python -m pytest -q

bench: install
	$(OFFLINE) $(BIN)/python bench/run.py

clean:
	rm -rf outputs
