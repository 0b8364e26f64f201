# lbaffd — the two commands a newcomer needs: `make demo` and `make test`.
# Both install what is missing first (Debian packages, then a venv in .venv).

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
PY           := $(VENV)/bin/python
DEB_PACKAGES := openvswitch-switch ovn-common ovn-central iproute2 ethtool python3-venv systemd openssl procps
STAMP        := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
PYTEST_ARGS  ?=

.PHONY: deps deb-deps venv test unit lint demo demo-stop clean

deps: deb-deps venv

deb-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

## make test: lint, type check, unit tests, then integration tests against real OVS.
test: deps
	$(PY) -m ruff check lbaffd lbaffd_sandbox tests
	$(PY) -m mypy lbaffd
	@rc=0; $(PY) -m pytest -q -ra $(PYTEST_ARGS) tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; \
	exit $$rc

unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(PY) -m ruff check lbaffd lbaffd_sandbox tests
	$(PY) -m mypy lbaffd

## make demo: embedded sandbox + lbaffd + live sticky-session view (Ctrl-C tears it down).
demo: deps
	$(PY) -m lbaffd_sandbox.demo

demo-stop: venv
	$(PY) -m lbaffd_sandbox.demo --stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
