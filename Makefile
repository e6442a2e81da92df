# Two commands on a fresh machine: `make demo` and `make test`. Everything installs from uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PYTEST_ARGS ?=

.PHONY: setup test demo lint

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras

test: setup
	$(UV) run pytest $(PYTEST_ARGS)

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

demo: setup
	$(UV) run wsi tile tests/data/slides --out demo_out/tiles --mpp 0.5
	@echo "QC images: $$(ls demo_out/tiles/*.qc.png)"
