# The two commands of the README: `make serve` (set up, build the demo models if missing, serve)
# and `make test` (set up, run the tests). Both work on a fresh machine with no network but PyPI.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install models serve test bentoml-range soak bench engine-bench bento image base-image image-test lock clean real-topic real-sentiment real-models

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

# The BentoML range pyproject.toml allows, tested at both ends (the main run tests constraints.txt's
# version): the service's own tests on the oldest and the newest BentoML 1.4 in a copy of the venv
# where only BentoML (and what it needs) changes. 1.4.20 is the first 1.4 that runs without the
# retired `fs` package (older ones need setuptools' pkg_resources, gone from current setuptools).
BENTOML_VERSIONS ?= 1.4.20 1.4.40
RANGE_TESTS ?= tests/service/test_batcher.py tests/service/test_internals.py \
  tests/service/test_batching_strategy.py tests/service/test_service_batching.py \
  tests/service/test_service_http.py tests/service/test_service_serve.py
bentoml-range: install
	@set -e; for v in $(BENTOML_VERSIONS); do \
	  echo "bentoml-range: BentoML $$v"; \
	  rm -rf build/venv-bentoml-$$v; mkdir -p build; cp -a $(VENV) build/venv-bentoml-$$v; \
	  build/venv-bentoml-$$v/bin/python -m pip install -q "bentoml==$$v"; \
	  build/venv-bentoml-$$v/bin/python -c "import bentoml; assert bentoml.__version__ == '$$v', bentoml.__version__"; \
	  build/venv-bentoml-$$v/bin/python -m pytest -q -p no:cacheprovider $(RANGE_TESTS) $(PYTEST_ARGS); \
	  rm -rf build/venv-bentoml-$$v; \
	done

# The soak benchmark (docs/reliability.md): the served models at 70% of their measured peak for
# 10 minutes; errors, p99 drift and resident memory to docs/reports/soak.json. Needs ../shared.
soak: models
	$(PY) -m bench.soak --minutes 10 --fraction 0.7

# The side-by-side benchmark (issue 13, docs/benchmarks.md): this service against FastAPI +
# transformers, BentoML + transformers, MLServer and PyTriton, each in its own venv under
# build/bench-envs (built once; needs PyPI), wrk and Locust as load generators. About 25 minutes.
bench: models
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 2; }
	$(BIN)/textcls bench $(BENCH_ARGS)

# The engine alone, in process: batching rules, FLOP rate and the measured peak (docs/benchmarks.md)
engine-bench: models
	$(PY) -m bench.engine --json docs/reports/engine.json

bento: models
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/bentoml build

# The CPU image (docs/deploy.md#images): the Bento with both models of the store, containerized
# with whatever container tool the machine has (docker with buildx, else podman, else buildah).
# BentoML's python:3.11-slim is the base unless BASE_IMAGE names another, e.g. the one
# `make base-image` builds from Debian's packages where no registry is reachable:
#   make base-image && make image BASE_IMAGE=localhost/textcls-base:bookworm
# IMAGE_ARGS go to k8s/build-images.sh (--registry, --tag, --push); CONTAINERIZE_OPTS (environment)
# to `bentoml containerize`, for this machine's build only (a proxy's CA: .ci/run).
BASE_IMAGE ?=
image: models
	PATH=$(abspath $(BIN)):$$PATH BASE_IMAGE=$(BASE_IMAGE) k8s/build-images.sh --only cpu $(IMAGE_ARGS)

base-image:
	k8s/base-image.sh

# The image run as the rendered manifests say Kubernetes runs it (tests/test_image.py): needs the
# image `make image` built (build/image-cpu.tag), podman or docker, promtool.
image-test: install
	TEXTCLS_IMAGE_STORE=$${BENTOML_HOME:-$$HOME/bentoml} $(PY) -m pytest -q -m image tests/test_image.py $(PYTEST_ARGS)

# The Bento's lock files (bentofile.yaml installs from them): requirements/serving.txt resolved
# against PyPI for the image (Linux x86_64, Python 3.11) at the versions CI tests (constraints.txt),
# with the sha256 of every file of every package. serving-gpu.lock is the same with onnxruntime-gpu
# (k8s/gpu_bentofile.py). Needs PyPI; run it after changing either input and commit the result
# (tests/test_security.py fails while a lock disagrees with them).
LOCK_ARGS = -c constraints.txt --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" --quiet
lock: install
	$(PY) -m pip install -q -c constraints.txt uv
	$(BIN)/uv pip compile requirements/serving.txt $(LOCK_ARGS) -o requirements/serving.lock
	sed 's/^onnxruntime==/onnxruntime-gpu==/' requirements/serving.txt \
	  | $(BIN)/uv pip compile - $(LOCK_ARGS) -o requirements/serving-gpu.lock

# Real-data models (issue 4): the offline base model fine-tuned on ../shared/data, exported with
# the dev file so every variant's accuracy is checked (a variant that loses more than 0.5 points,
# significantly by the paired McNemar test, is marked failed and never served), then stored as the
# served `topic` / `sentiment`. Settings and results of every run are in docs/real-data.md.
SHARED ?= ../shared/data
REAL_TOPIC_ARGS ?= --epochs 2 --learning-rate 1e-4 --batch-size 32 --max-length 128 --precision auto
# SST-2 train (67,349 rows) first, then the first 12,000 reviews of the (shuffled) IMDB train split
# Trained with head_tail (one row per review), served with chunk (IMDB dev 92.8% vs 91.8%, at
# 2.7 windows per review); temperatures fitted on SST-2 and IMDB dev together, one per reading
REAL_SENTIMENT_ARGS ?= --limit 79349 --epochs 2 --learning-rate 5e-5 --batch-size 32 --max-length 128 \
  --precision auto --long-texts head_tail --head-tokens 32

real-topic: install
	@test -f $(SHARED)/topic/agnews_train_large.csv || { echo "no $(SHARED)/topic/agnews_train_large.csv: set SHARED=<folder with the real data>"; exit 2; }
	$(BIN)/textcls train --task topic --data $(SHARED)/topic/agnews_train_large.csv \
	  --eval-data $(SHARED)/topic/agnews_dev.csv --output checkpoints/real-topic $(REAL_TOPIC_ARGS)
	$(BIN)/textcls export checkpoints/real-topic --task topic --eval-data $(SHARED)/topic/agnews_dev.csv

real-sentiment: install
	@test -f $(SHARED)/sentiment/imdb_train_large.csv || { echo "no $(SHARED)/sentiment/imdb_train_large.csv: set SHARED=<folder with the real data>"; exit 2; }
	$(BIN)/textcls train --task sentiment --data $(SHARED)/sentiment/sst2_train.csv \
	  --data $(SHARED)/sentiment/imdb_train_large.csv --eval-data $(SHARED)/sentiment/sst2_dev.csv \
	  --output checkpoints/real-sentiment $(REAL_SENTIMENT_ARGS)
	$(BIN)/textcls export checkpoints/real-sentiment --task sentiment --eval-data $(SHARED)/sentiment/sst2_dev.csv \
	  --long-texts chunk --calibration-data $(SHARED)/sentiment/sst2_dev.csv \
	  --calibration-data $(SHARED)/sentiment/imdb_dev.csv

real-models: real-topic real-sentiment

clean:
	rm -rf build dist bundles checkpoints reports .pytest_cache
