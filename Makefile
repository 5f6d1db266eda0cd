# Two commands do everything (see README.md):
#   make run    set up on a fresh machine, install the models, run the service on ./var/inbox -> ./var/outbox
#   make test   set up the same way, then run the whole test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
ANOND  := $(VENV)/bin/anond
# [models] dir's default: share/anond/models inside the venv (no comment after a value: make keeps
# the spaces before it)
MODELS := $(VENV)/share/anond/models

.PHONY: setup run test models bench clean
setup: $(VENV)/.installed $(MODELS)/.installed

$(VENV)/.installed: pyproject.toml packaging/setup-system.sh
	sh packaging/setup-system.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(MODELS)/.installed: $(VENV)/.installed models/manifest.toml
	$(ANOND) models install
	touch $@

run: setup
	mkdir -p var/inbox var/outbox
	$(ANOND) run --log-level info

# platedet (AGPL-3.0, an opt-in): some tests bring it as an operator's own model, and the
# benchmarks use it as the independent plate checker; never installed by `make run`.
test: setup
	$(ANOND) models install platedet-yolov8s-seg
	$(PY) -m pytest -q

bench: setup
	$(ANOND) models install platedet-yolov8s-seg
	$(PY) bench/accuracy.py
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache
