# The two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck unit clean bench system-deps

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pypi-mirror needs Python 3.11 or newer; set PYTHON=python3.X")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/pypi-mirror serve

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mirror tests bench

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy --strict mirror

# nginx is needed by tests/test_nginx.py (deploy/nginx.conf in front of the daemon),
# chromium by tests/test_home_page.py (the page at / rendered in a headless browser).
# systemd-analyze and strace by tests/test_systemd_units.py (the units, and the system
# calls of serve and sync against their filter).
# $(call debian_package,COMMAND,PACKAGE,TESTS[,AFTER]): install PACKAGE from Debian's
# packages when COMMAND is missing (as root, where apt-get exists), then run AFTER; else
# say which tests need it.
define debian_package
	@command -v $(1) >/dev/null 2>&1 || [ -x /usr/sbin/$(1) ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(2) from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null $(if $(4),&& { $(4); }); \
	  else \
	    echo "$(1) is missing: install it (e.g. sudo apt-get install $(2)) to run $(3)"; \
	  fi; }
endef

system-deps:
	$(call debian_package,nginx,nginx,tests/test_nginx.py,service nginx stop >/dev/null 2>&1 || true)
	$(call debian_package,chromium,chromium,tests/test_home_page.py)
	$(call debian_package,systemd-analyze,systemd,tests/test_systemd_units.py)
	$(call debian_package,strace,strace,tests/test_systemd_units.py)

unit: $(VENV)/.installed-test system-deps
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test: lint typecheck unit

# `make bench` (bench/README.md): ours against peers measured in the same run (pull-through
# against nginx, proxpi and devpi; cold pip/uv installs; sync against bandersnatch; a scale
# phase of 100,000 generated projects); writes bench/RESULTS.md; about 20 minutes on 2
# cores; not part of `make test`. The peers get their own venv; wrk (the warm phases' load
# generator) comes from Debian's packages when missing and we are root.
# BENCH_ARGS="--quick" for a smoke run (a few minutes; it leaves bench/RESULTS.md alone).
BENCH_PEERS := bench/.venv-peers

$(BENCH_PEERS)/.installed: bench/peers.txt
	$(PYTHON) -m venv $(BENCH_PEERS)
	$(BENCH_PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_PEERS)/bin/python -m pip install --quiet -r bench/peers.txt
	touch $@

bench: $(VENV)/.installed-test $(BENCH_PEERS)/.installed system-deps
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is missing: the warm phases fall back to the slower aiohttp client"; \
	  fi; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
