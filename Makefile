# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to 2.13.0. Without a GPU pip's default resolution of that pin on this
# machine kind is the CPU wheel; on a CUDA machine pass the index of the wheel you want, e.g.
#   make demo TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,bench,trackers]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/collapse-sweep run configs/quick.yaml --name quick

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check sweep models tests benchmarks deploy

clean:
	rm -rf $(VENV) runs .pytest_cache
