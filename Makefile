# Build, test and run the book. The README's two commands: `make book`, `make test`.
#
#   make book    execute every notebook and build the HTML book into _build/html
#   make test    ruff + pytest tests/ and the package's doctests + nbval on book/ + the book build + the book in a browser
#   make lab     JupyterLab on book/, with transfer_utils importable
#   make bench   benchmarks/run.py: tu.fit overhead and per-notebook execution times
#   make clean   remove build outputs and caches (keeps .venv); distclean also removes .venv
#
# The first target that needs it creates .venv (python3 -m venv) and installs this
# repository into it in editable mode with all extras; it reinstalls when
# pyproject.toml changes.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Non-interactive runs: no progress bars, no GUI windows. The book build and nbval
# leave MPLBACKEND unset on purpose: a kernel started with MPLBACKEND=Agg draws no
# inline figures, so the rendered book would have no plots.
# One CPU thread for torch and BLAS: the models are tiny, and competing threads slow them
# many times over whenever anything else runs (see tu.setup and TU_THREADS in the README).
QUIET_ENV := TU_PROGRESS=0 MPLBACKEND=Agg OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
KERNEL_ENV := env -u MPLBACKEND TU_PROGRESS=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

CELL_TIMEOUT ?= 300
# Processes at once, one per core: notebooks (nbval, make book) and unit-test workers.
# Each notebook runs once per `make test`: nbval executes it (pytest-xdist, one notebook per
# worker) and stores the executed copy in the book's execution cache (book/conftest.py,
# --book-cache), which the book build then renders without executing it again. `make book`
# alone first executes whatever the cache lacks, in parallel (scripts/execute_notebooks.py).
JOBS ?= $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
JB_FLAGS ?= -W -n --keep-going
BENCH_ARGS ?=
# JupyterLab refuses to run as root (containers, Colab-like VMs) without this flag.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: help venv book test lint unit nbval browser chromium lab bench clean distclean

help:
	@sed -n '3,7p' Makefile | sed 's/^# \{0,1\}//'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

venv: $(STAMP)

book: $(STAMP)
	$(KERNEL_ENV) $(BIN)/python scripts/execute_notebooks.py --jobs $(JOBS)
	$(KERNEL_ENV) $(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book: $(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .

# tests/ and every example in the package's docstrings (they are documentation; they must run)
unit: $(STAMP)
	$(QUIET_ENV) $(BIN)/python -m pytest -n $(JOBS) --doctest-modules tests/ transfer_utils/

nbval: $(STAMP)
	$(KERNEL_ENV) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) --book-cache book/

# Sequential on purpose: stop at the first failing step.
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory nbval
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory browser
	$(MAKE) --no-print-directory coursework-check

# The built book in headless Chromium (Debian's chromium + chromium-driver, installed
# here when missing): pages load, figures show, math renders, links resolve.
# Screenshots go to _build/screenshots/.
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver >/dev/null; \
	  else \
	    echo "the browser tests need chromium and chromedriver: install them (Debian/Ubuntu:" \
	         "sudo apt-get install chromium chromium-driver) and run make test again" >&2; \
	    exit 1; \
	  fi; }

browser: $(STAMP) chromium
	$(QUIET_ENV) $(BIN)/python -m pytest -p no:cacheprovider tests_browser/

# The coursework pack (coursework/README.md), built and graded offline with nbgrader:
# student copies and the autograder course in _build/coursework/, then every assignment's
# instructor, blank and wrong submissions graded in parallel, with a results table.
.PHONY: coursework coursework-check
coursework: $(STAMP)
	$(QUIET_ENV) $(BIN)/python coursework/coursework.py build

coursework-check: coursework
	$(QUIET_ENV) $(BIN)/python coursework/coursework.py check

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=book $(LAB_FLAGS)

bench: $(STAMP)
	$(QUIET_ENV) $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) \
		-type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
