# `make test` installs what the tests need and runs them (the README's test command; .ci/run calls it).
PYTHON ?= python3

.PHONY: test system-deps lint format

system-deps:
	@# Debian packages the integration and browser tests run for real; skipped where apt is absent.
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# chromium: browser tests (Playwright drives Debian's build); prometheus + alertmanager: promtool, amtool;
# docker.io + iptables: the engine the image and stack tests build and run on; debootstrap: the local
# base image (no registry is reachable); docker-compose: the stack test; postgresql: Optuna's RDB storage. (kubectl, for the Kubernetes
# manifests, comes with this machine image.)
APT_PACKAGES ?= chromium prometheus prometheus-alertmanager docker.io iptables debootstrap docker-compose postgresql

test: system-deps
	$(PYTHON) -m pip install -q -r requirements-dev.txt
	$(MAKE) lint
	@# engine.sh starts a private Docker engine for the run (root) and stops it afterwards.
	bash deploy/docker/engine.sh $(PYTHON) -m pytest

# The same two gates for every Python file: lint rules, then formatting (run `make format` to fix).
RUFF_PATHS = fer tests app.py benchmarks monitoring notebooks/build_notebooks.py

lint:
	$(PYTHON) -m ruff check $(RUFF_PATHS)
	$(PYTHON) -m ruff format --check $(RUFF_PATHS)

format:
	$(PYTHON) -m ruff format $(RUFF_PATHS)
	$(PYTHON) -m ruff check --fix $(RUFF_PATHS)
