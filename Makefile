# lbaffd — the two commands a newcomer needs: `make demo` and `make test`.
# Both install what is missing first (Debian packages, then a venv in .venv).

SHELL        := /bin/bash
# Debian's python3 with its python3-openvswitch: the OVSDB IDL then parses JSON in C
# (ovs._json; PyPI's ovs wheel has only the pure-Python parser, ~10x slower)
PYTHON       ?= /usr/bin/python3
VENV         := .venv
PY           := $(VENV)/bin/python
DEB_PACKAGES := openvswitch-switch ovn-common ovn-central ovn-host iproute2 ethtool python3-venv \
                python3-openvswitch systemd openssl procps
# make test only: promtool (checks and unit-tests deploy/prometheus/lbaffd-rules.yaml).
# The package also brings a Prometheus server (and recommends node-exporter) whose
# services are stopped and disabled on a systemd host: the suite needs only the tool.
TEST_DEB_PACKAGES := prometheus
# building lbaffd (venv, dist): git for the version (setuptools-scm); groff/man for lbaffd(8)
BUILD_DEB_PACKAGES := git groff-base man-db
# make bench only: real ovn-controller (ovn-host) and ovn-northd (ovn-central) to compare against
BENCH_DEB_PACKAGES := ovn-host ovn-central
OVN_UNITS    := ovn-host ovn-controller ovn-central ovn-northd ovn-ovsdb-server-nb ovn-ovsdb-server-sb
# the venv's recipe is part of the stamp: a change to how it is built rebuilds it
VENV_KIND    := system-site-packages:$(PYTHON)
STAMP        := $(VENV)/.installed-$(shell (cat pyproject.toml; echo '$(VENV_KIND)') | md5sum | cut -c1-12)
PYTEST_ARGS  ?=
BENCH_ARGS   ?=
DEMO_ARGS    ?=

.PHONY: deps deb-deps bench-deps venv test unit lint demo demo-stop bench bench-companion \
        bench-soak bench-realistic clean man dist image

deps: deb-deps venv

# $(call install-missing,PACKAGES,AFTER): apt-get install what dpkg does not
# have yet, then run the AFTER shell command (only when something was installed).
define install-missing
	@missing=""; for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    $(2) \
	fi
endef

# ovn-host/ovn-central start ovn-controller/northd on a systemd host: the tests and the
# demo run their own in private run directories, so the packages' services are stopped.
deb-deps:
	$(call install-missing,$(DEB_PACKAGES),if [ -d /run/systemd/system ]; then systemctl disable --now $(OVN_UNITS) 2>/dev/null || true; fi;)
	$(call install-missing,$(BUILD_DEB_PACKAGES),true;)
	$(call install-missing,$(TEST_DEB_PACKAGES),if [ -d /run/systemd/system ]; then systemctl disable --now prometheus prometheus-node-exporter 2>/dev/null || true; fi;)

# The benchmark runs its own private ovn-northd/ovn-controller: services the
# packages start on a systemd host are stopped so they do not compete for the CPUs.
bench-deps: deps
	$(call install-missing,$(BENCH_DEB_PACKAGES),if [ -d /run/systemd/system ]; then systemctl stop $(OVN_UNITS) 2>/dev/null || true; fi;)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -x $(PY) ] && ! $(PY) -c 'import ovs._json' 2>/dev/null; then \
	    echo "$(VENV): no C JSON parser for the OVSDB IDL; recreating it on $(PYTHON)"; rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

## make test: lint, type check, unit tests, then integration tests against real OVS.
test: deps
	$(PY) -m ruff check lbaffd lbaffd_sandbox tests bench
	$(PY) -m mypy lbaffd lbaffd_sandbox bench
	@rc=0; $(PY) -m pytest -q -ra $(PYTEST_ARGS) tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; \
	exit $$rc

unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(PY) -m ruff check lbaffd lbaffd_sandbox tests bench
	$(PY) -m mypy lbaffd lbaffd_sandbox bench

## make demo: OVN sandbox (northd + 2 ovn-controllers) + lbaffd --mode companion, OVN native vs
## lbaffd for new clients, live (Ctrl-C tears it down); DEMO_ARGS=--standalone: the standalone demo.
demo: deps
	$(PY) -m lbaffd_sandbox.demo $(DEMO_ARGS)

demo-stop: venv
	$(PY) -m lbaffd_sandbox.demo --stop

## make bench: the benchmark (about 7 min; not part of make test). Results in
## bench/results/, table in README.md. BENCH_ARGS=--quick: a ~1 min smoke run.
bench: bench-deps
	LBAFFD_BENCH_COMMAND='make bench$(if $(BENCH_ARGS), BENCH_ARGS="$(BENCH_ARGS)")' \
	    $(PY) -m bench --readme $(BENCH_ARGS)

## make bench-companion: OVN's own affinity vs lbaffd's companion mode, same client
## scenarios, one run on a two-chassis OVN sandbox (~1 min).
bench-companion: bench-deps
	$(PY) -m bench.companion $(BENCH_ARGS)

## make bench-realistic: lbaffd and ovn-controller on bench.cluster's cluster-shaped SB
## (issue 17's targets table); hours at N=5000. BENCH_ARGS="--quick" for a ~1 min smoke run,
## "--sides lbaffd --sb-direct" for lbaffd's samples in ~1 h (README: Realistic benchmark).
bench-realistic: bench-deps
	$(PY) -m bench.realistic $(BENCH_ARGS)

## make man: regenerate man/lbaffd.include (control commands, metrics) from the
## code and ./lbaffd.8 (`man ./lbaffd.8`) from it and the parser; after a change to
## the flags, commands or metrics (a test says when). Builds render their own copy.
man: venv
	$(PY) -m lbaffd.ops.manpage

## make dist: wheel and sdist in dist/, versioned by the git tags (setuptools-scm:
## tag vX.Y.Z for a release), lbaffd(8) inside the wheel.
dist: venv
	rm -rf dist && $(PY) -m build --outdir dist .

## make image: the container image with podman, buildah or docker (with an engine);
## skipped with a message when there is none. IMAGE=name:tag to choose the tag.
image: venv
	PY=$(PY) deploy/build-image.sh $(IMAGE)

## make bench-soak: lbaffd for 30 min (then 5 min idle) on bench.cluster's realistic SB under
## churn; RSS/CPU/fds/threads sampled, graph and figures in README.md.
## BENCH_ARGS="--duration 600" for a shorter run (labelled as such).
bench-soak: deps
	$(PY) -m bench.soak --readme $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
