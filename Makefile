# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Spinning OpenMP threads make a busy 2-core machine 10-50x slower; tests use 1 thread.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: this version is a local CPU wheel; any other pulls CUDA (GBs).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[live,test,atari,paint,serve,browser]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m everloop.demo

test: $(STAMP)
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo .pytest_cache
