# `make test` installs what the tests need and runs them (the README's test command; .ci/run calls it).
PYTHON ?= python3

.PHONY: test system-deps lint run

system-deps:
	@# Debian packages the integration and browser tests run for real; skipped where apt is absent.
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

APT_PACKAGES ?=

test: system-deps
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	$(PYTHON) -m ruff check fer tests app.py benchmarks
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check fer tests app.py benchmarks
