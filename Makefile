# offload: every set-up step lives here (CI runs `make test` on a fresh machine).
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip --disable-pip-version-check -q
STAMP   := $(VENV)/.deps-stamp

.PHONY: all venv build test demo serve bench bench-quick test-sanitize test-leaks lint clean system-deps

all: build

# --- environment -----------------------------------------------------------
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U "pip>=23" "setuptools>=68,<80" wheel
	$(PY) tools/deps.py test bench dev > $(VENV)/requirements.txt
	$(PIP) install -r $(VENV)/requirements.txt
	touch $(STAMP)

venv: $(STAMP)

# Debian packages some tests need (headless Chromium for the dashboard test).
system-deps:
	@bash tools/system-deps.sh

# --- build -----------------------------------------------------------------
build: $(STAMP)
	$(PIP) install --no-deps --no-build-isolation --force-reinstall .

# --- tests -----------------------------------------------------------------
test: build system-deps
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples
	$(PY) -m mypy

# --- main job ----------------------------------------------------------------
demo: build
	$(PY) examples/showcase.py

# --- benchmarks --------------------------------------------------------------
bench: build
	$(PY) bench/run.py

bench-quick: build
	$(PY) bench/run.py --quick

clean:
	rm -rf build dist *.egg-info src/*.egg-info $(VENV)
