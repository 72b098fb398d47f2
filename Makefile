# approxifer — two commands set everything up: `make book` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
# Trained models, in the order `make train` trains them (dataset:arch).
MODELS ?= mnist:lenet5 mnist:mlp mnist:resnet18 fashion-mnist:lenet5 fashion-mnist:mlp fashion-mnist:resnet18 \
  cifar10:resnet18 cifar10:resnet34 cifar10:vgg16 cifar10:mobilenetv2

.PHONY: help venv data train test unit nbval notebooks html pdf browser lint bench bench-grid bench-train book clean

help:
	@echo "make book   set up .venv, prepare the data, run the notebooks, build the HTML book (_build/html)"
	@echo "make test   everything CI checks: lint, unit tests, nbval of notebooks/, book build, browser check"
	@echo "make data | train | notebooks | nbval | html | pdf | browser | lint | bench | bench-grid | bench-train | clean"

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
	$(PY) benchmarks/locator.py

# One training step of the CIFAR-10 ResNet-18 recipe, eager vs torch.compile (minutes).
bench-train: data
	$(PY) benchmarks/train_step.py

# The paper's straggler grid on the whole test sets, from an empty cache then a warm one (minutes).
bench-grid: data
	$(PY) benchmarks/grid.py

# The published run: execute every notebook with book/params.yml into book/, then build the HTML.
book: data
	.venv/bin/approxifer notebooks --params book/params.yml --out book
	$(MAKE) html

# Re-execute notebooks/ in place with their CI-sized defaults (the outputs nbval compares against).
notebooks: data
	for nb in notebooks/*.ipynb; do .venv/bin/papermill --cwd . "$$nb" "$$nb"; done

# The HTML book from the executed notebooks as committed (nothing is re-executed).
html: venv
	.venv/bin/jupyter-book build . --all -W -n --keep-going

# The whole book as one PDF (Jupyter Book's LaTeX builder, XeLaTeX), from the executed notebooks as committed; installs
# the Debian TeX packages it needs when they are missing, as `make browser` does for Chromium. Not part of `make test`.
TEX_PACKAGES := texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-xetex latexmk \
  fonts-freefont-otf tex-gyre lmodern
pdf: venv
	command -v xelatex >/dev/null && command -v latexmk >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES))
	.venv/bin/jupyter-book build . --builder pdflatex
	@echo "the book as a PDF: _build/latex/approxifer.pdf"

nbval: data
	$(PY) -m pytest --nbval notebooks --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

browser: html
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) tests/browser/check_book.py _build/html

test: lint data unit nbval html browser

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
