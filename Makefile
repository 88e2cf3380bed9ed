# Two commands (README quickstart):
#   make train   set up .venv if missing, then run `spell train` on the built-in default
#   make test    set up .venv if missing, then run ruff and the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup train test lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first, from the pinned local build; any other version downloads gigabytes.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# --overwrite: a second `make train` moves the earlier runs/builtin aside (runs/builtin.replaced-TIME), never deletes it
TRAIN_FLAGS ?= --overwrite

train: $(STAMP)
	$(BIN)/spell train $(TRAIN_FLAGS) $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check spell tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
