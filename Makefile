# Two commands on a fresh machine: `make demo` and `make test`. Everything installs from uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PYTEST_ARGS ?=
# Installed packages are byte-compiled once at sync: every `wsi` subprocess (tests, torchrun ranks, Ray
# workers) then imports torch and scikit-learn from .pyc instead of recompiling them, even where the
# environment sets PYTHONDONTWRITEBYTECODE.
export UV_COMPILE_BYTECODE := 1

.PHONY: setup test demo lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras

test: setup
	$(UV) run pytest $(PYTEST_ARGS)

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

# The whole pipeline on a demo cohort cut from the real slides in tests/data (mechanics, not a diagnosis).
demo: setup
	$(UV) run wsi demo --out demo_out
