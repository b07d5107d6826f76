# ipshift: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEB_TEST := iproute2 tcpdump iputils-arping iputils-ping
PYTHON ?= python3

.PHONY: demo test chaos bench venv debs lint clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.stamp

# Debian packages the lab and the tests call; installed only when missing.
debs:
	@missing=""; for p in $(DEB_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: venv debs
	$(VENV)/bin/ipshift demo

test: venv debs
	$(PY) -m mypy
	$(PY) -m pytest -q tests

# The randomized fault test alone, for 10 minutes of faults (IPSHIFT_CHAOS_SEED=N replays a run).
chaos: venv debs
	IPSHIFT_CHAOS_SEED=$${IPSHIFT_CHAOS_SEED:-random} IPSHIFT_CHAOS_SECONDS=600 IPSHIFT_REQUIRE_NETNS=1 $(PY) -m pytest -q -s tests/lab/test_chaos.py

bench: venv debs
	$(PIP) install -q -e '.[test,bench]'
	$(PY) bench/run.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache
