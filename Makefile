# beamcap — `make help` lists the targets. Everything runs inside .venv, created on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench lock clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.py constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("beamcap needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install beamcap with its test extra, pinned by constraints.txt

demo: install ## the whole job on the synthetic dataset: synth, features, train, caption, evaluate, report
	$(BIN)/beamcap demo --workdir data/demo

test: install ## run the whole test suite
	$(BIN)/python -m pytest

lint: install ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff: fix what can be fixed, reformat
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## run every benchmark (each prints ratios against an in-run baseline)
	$(BIN)/python benchmarks/beam_search.py
	$(BIN)/python benchmarks/caption_pipeline.py

lock: ## re-resolve the dependencies in a scratch venv and rewrite constraints.txt
	rm -rf /tmp/beamcap-lock && $(PYTHON) -m venv /tmp/beamcap-lock
	/tmp/beamcap-lock/bin/pip install --quiet --upgrade pip
	/tmp/beamcap-lock/bin/pip install --quiet -e '.[test]'
	/tmp/beamcap-lock/bin/pip freeze --exclude-editable | grep -v '^beamcap' > constraints.txt

clean: ## remove the virtualenv and caches (not data/ or out/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
