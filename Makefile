# mineralseg: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MS     := $(VENV)/bin/mineralseg
DEMO   ?= demo-out

.PHONY: demo test test-fast install clean

# (Re)install when pyproject.toml changes; the stamp file marks a finished install.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

demo: $(VENV)/.installed
	$(MS) synth $(DEMO)/synth --samples 2 --size 2048 --seed 0 --overwrite
	$(MS) prepare $(DEMO)/synth/prepare.yaml --out $(DEMO)/dataset --overwrite
	@echo "QA figures: $(DEMO)/dataset/qa/"
	@ls -1 $(DEMO)/dataset/qa/

clean:
	rm -rf $(DEMO) .pytest_cache
