# ekc: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REGION ?= example

# What the deploy host needs from Debian: the checkers the tests run rendered files through, the browser
# for the audit report and the CRM (certutil puts the region CA in its trust store), SIPp for the calls, a
# PostgreSQL server for the KPI views' tests (a throw-away cluster), and (for the lab) systemd-nspawn and
# debootstrap.
HOST_PACKAGES := chromium openssh-server nftables sip-tester systemd-container debootstrap iproute2 gnupg \
                 apt-utils postgresql libnss3-tools

.PHONY: help venv host-deps demo test test-unit lint bench schema golden clean

help:
	@echo "make demo   - the example region end to end: secrets, render, report, bundle, lab, apply, plan, verify, a call"
	@echo "make test   - every test (unit, golden renders, property tests, browser)"
	@echo "make lint   - ruff, mypy --strict (ekc/, schemas/), yamllint, the import graph, ansible-lint (production)"
	@echo "make bench  - render, bundle, apply per engine, backup/restore, database failover, IVR edit to live, call load, the pool's load with 1-3 nodes, alert delay"
	@echo "make schema - regenerate schemas/region.schema.json and the README's spec reference"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements.lock
	touch $@

host-deps:
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages (install as root): $$missing"; exit 2; fi; \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: venv host-deps
	$(PY) deploy.py secrets init $(REGION)
	$(PY) deploy.py validate $(REGION)
	$(PY) deploy.py render $(REGION)
	$(PY) deploy.py report $(REGION)
	$(PY) deploy.py bundle build $(REGION)
	$(PY) deploy.py bundle verify bundles/$(REGION)
	$(PY) deploy.py lab up $(REGION)
	$(PY) deploy.py apply $(REGION) --engine pyinfra -y
	$(PY) deploy.py apply $(REGION) --engine ansible --no-fast-path -y
	$(PY) deploy.py plan $(REGION)
	$(PY) deploy.py verify $(REGION)
	@$(PY) deploy.py lab status $(REGION)
	$(PY) deploy.py lab call $(REGION)
	@$(PY) deploy.py endpoints $(REGION)
	@echo "audit report: build/$(REGION)/audit/index.html; log in: ./deploy.py lab ssh $(REGION) <node>"

test: venv host-deps
	$(PY) -m pytest -q -n 2 --dist loadfile

test-unit: venv
	$(PY) -m pytest -q tests/unit

lint: venv
	$(VENV)/bin/ruff check ekc schemas tests deploy.py
	$(VENV)/bin/mypy ekc schemas deploy.py
	$(VENV)/bin/yamllint -s inventories molecule roles .yamllint
	$(PY) -m tests.support.importgraph
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint -q --profile production roles/ molecule/

bench: venv host-deps
	$(PY) -m tests.bench.render_bench
	$(PY) deploy.py secrets init $(REGION) >/dev/null
	$(PY) -m tests.bench.delivery_bench
	$(PY) -m tests.bench.db_bench
	$(PY) -m tests.bench.failover_bench
	$(PY) -m tests.bench.calls_bench
	$(PY) -m tests.bench.pool_bench
	$(PY) -m tests.bench.alert_bench

schema: venv
	$(PY) deploy.py schema

golden: venv
	$(PY) -m pytest -q tests/test_golden.py --update-golden

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
