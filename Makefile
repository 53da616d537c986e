# `make demo`: install into .venv and run the MGP → BFT (Bal-BCE) → evaluate pipeline on the
# bundled Fashion-MNIST-LT subset through the embedded service.
# `make test`: install into .venv and run the test suite.
PYTHON ?= python3.11
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: install demo test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,mlflow,bench]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/livt demo

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
