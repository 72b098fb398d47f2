# approxifer — two commands set everything up: `make book` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
# Trained models, in the order `make train` trains them (dataset:arch).
MODELS ?= mnist:lenet5 mnist:mlp mnist:resnet18 fashion-mnist:resnet18 cifar10:resnet18 cifar10:resnet34

.PHONY: help venv data train test unit lint bench book clean

help:
	@echo "make book   set up .venv, prepare the data, run the notebooks, build the HTML book (_build/html)"
	@echo "make test   everything CI checks: lint, unit tests"
	@echo "make data | train | lint | bench | clean"

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

data: venv
	.venv/bin/approxifer data

# Resumable: an interrupted `make train` continues each model from its last checkpoint.
train: data
	set -e; for m in $(MODELS); do \
	  if [ -f models/$${m/:/-}.json ]; then echo "models/$${m/:/-}.json exists; skipping"; continue; fi; \
	  .venv/bin/approxifer train $${m%%:*} $${m##*:} --resume; \
	done

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

unit: venv
	$(PY) -m pytest tests

bench: venv
	$(PY) benchmarks/codec.py

book: data
	.venv/bin/jupyter-book build . -W -n --keep-going

test: lint data unit

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
