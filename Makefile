# polyscale: `make demo` and `make test` are all the set-up anyone needs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install demo test lint bench gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) -m harness.demo --out results/demo

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	for bench in $(filter-out bench/gpu_check.py,$(wildcard bench/*.py)); do $(PY) $$bench || exit 1; done

clean:
	rm -rf results/demo results/scratch wandb .pytest_cache

# The GPU machine check (docs/gpu.md): at most 8 minutes on one GPU; DEVICE=cpu runs it here.
DEVICE ?= cuda
gpu-check: $(STAMP)
	WANDB_MODE=disabled $(PY) bench/gpu_check.py --device $(DEVICE)
