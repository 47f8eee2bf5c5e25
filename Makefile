# audiolstm: `make train` runs the main job, `make test` the tests.
# Both create/refresh .venv and install what they need on a fresh machine.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel; GPU users
# pass e.g. TORCH_SPEC="torch==2.13.0" with a CUDA index, or an already
# installed torch via TORCH_SPEC=torch.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS       ?=
# pytest-xdist workers for `make test` (auto = one per core, at most 8; 0 = in this process)
TEST_WORKERS ?= auto
SWEEP      ?= depth
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed

.PHONY: help install train test test-slow lint bench gpu-check gpu-dry-run gpu-wheels sweep clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(STAMP)  ## create/refresh .venv with torch ($(TORCH_SPEC)) and the project

train: install  ## train the default model on the built-in data (ARGS="model=lstm_300x1 ...")
	$(BIN)/python train.py $(ARGS)

test: install  ## fast tests (a few minutes on 2 cores), one worker per core
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses=8 $(ARGS)

test-slow: install  ## the long end-to-end tests only, one worker per core
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --maxprocesses=8 $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check .

bench: install  ## benchmarks (results go to bench/RESULTS.md)
	$(BIN)/python bench/bench_windows.py
	$(BIN)/python bench/bench_explore.py
	$(BIN)/python bench/bench_train.py --write
	$(BIN)/python bench/bench_generate.py --write
	$(BIN)/python bench/bench_samplernn_train.py --write

gpu-check: install  ## every GPU measurement, <= 8 min on one GPU (bench/RESULTS-gpu.md)
	$(BIN)/python bench/gpu_check.py $(ARGS)

gpu-dry-run: install  ## the same steps on CPU at toy size (what its slow test runs)
	$(BIN)/python bench/gpu_check.py --dry-run $(ARGS)

gpu-wheels: install  ## wheels the lent GPU machine lacks, into .whl/ (bench/gpu_wheels.sh)
	PYTHON=$(BIN)/python bash bench/gpu_wheels.sh

sweep: install  ## one ablation sweep: make sweep SWEEP=depth ARGS="debug=smoke"
	$(BIN)/python train.py -m sweep=$(SWEEP) $(ARGS)

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache .hypothesis wandb lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
