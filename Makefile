# mineralseg: `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MS     := $(VENV)/bin/mineralseg
DEMO   ?= demo-out

.PHONY: demo test test-fast layers install clean

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

# The import layers: check the contracts, redraw docs/layers.md (docs/ARCHITECTURE.md).
layers: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(PY) tools/layers.py > docs/layers.md

demo: $(VENV)/.installed
	$(MS) demo $(DEMO)

clean:
	rm -rf $(DEMO) .pytest_cache
