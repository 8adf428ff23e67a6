# Quick start: `make demo` and `make test` (each creates .venv on a fresh machine).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	# CPU torch first, pinned, so no extra ever pulls the CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,hf,train]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/sftprep prepare examples/sample.jsonl -o build/demo --overwrite
	$(BIN)/sftprep inspect build/demo --index 9
	# SFT that demonstrably teaches: a tiny model learns two-digit addition on CPU (assistant-only vs no mask)
	$(BIN)/sftprep demo --out-dir build/sft-demo --overwrite

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	# the HTML report's browser test uses Debian's chromium (skips with a reason where it can't be installed)
	bash scripts/install_chromium.sh || echo "chromium unavailable: the browser test will skip"
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: broken set-up"; exit 1; fi; exit $$rc

clean:
	rm -rf build $(VENV)
