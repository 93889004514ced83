# `make demo` and `make test` are the whole set-up on a fresh machine:
# they create .venv, install the project and its Jupyter kernel on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench bench-year quality lab sample chromium clean-outputs venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name nqflow --display-name "Python (nqflow)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scheduler.py demo

NOTEBOOKS := notebooks/monitor.ipynb notebooks/threshold_lab.ipynb notebooks/offbook.ipynb notebooks/session.ipynb notebooks/gex.ipynb

# The tests on both cores (pytest-xdist), after the type checker and ruff (run beside the sample's
# generation and Chromium's install on a fresh clone); then the notebooks
# with nbval in one process (a notebook's cells share one kernel, so they must not be split).
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 lint sample chromium
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15 tests
	$(PY) -m pytest $(NOTEBOOKS) --nbval-lax

# The edit-test loop: everything but the tests marked slow, and no notebooks (under 2 minutes).
test-fast: $(STAMP)
	$(PY) scheduler.py sample
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check nqflow tests bench scheduler.py
	$(PY) -m ruff format --check nqflow tests bench scheduler.py
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_window.py
	$(PY) bench/bench_backtest.py
	$(PY) bench/bench_gex.py
	$(PY) bench/bench_live.py

# The year: a first-run backtest of 250 generated sessions (generated once into data/sample-250).
bench-year: $(STAMP)
	$(PY) bench/bench_backtest.py --year

quality: $(STAMP)
	$(PY) bench/detection_quality.py

# The sample market is an explicit step (about a minute, ~35 MB); demo, test and bench make it too.
sample: $(STAMP)
	$(PY) scheduler.py sample

# Debian's chromium for the report tests (installed when missing, as root).
chromium:
	bash .ci/ensure-chromium

lab: $(STAMP) sample
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/* data/state.sqlite
