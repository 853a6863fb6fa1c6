# The two commands of the README: `make serve` (set up, build the demo models if missing, serve)
# and `make test` (set up, run the tests). Both work on a fresh machine with no network but PyPI.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install models serve test bento clean

install: $(VENV)/.installed

# torch goes first, alone: `torch==2.13.0` is the CPU build on disk; letting pip resolve it
# together with the rest could pull a CUDA build. constraints.txt pins the versions CI tested.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

models: install
	$(BIN)/textcls build-defaults

serve: models
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/bentoml serve

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bento: models
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/bentoml build

clean:
	rm -rf build dist bundles checkpoints reports .pytest_cache
