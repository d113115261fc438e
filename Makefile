# Gatehouse — `make run` for the embedded demo, `make test` for the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/gatehouse)
TEST_REDIS_URL ?= $(or $(REDIS_URL),redis://127.0.0.1:6379/1)
TEST_ENV := DEBUG=0 SECRET_KEY=test-only-secret-key DATABASE_URL=$(TEST_DATABASE_URL) \
	REDIS_URL=$(TEST_REDIS_URL) GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=1

.PHONY: install run test lint format check-types bench clean prometheus

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q '.[dev]'
	@touch $@

install: $(VENV)/.installed

run: install
	@DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput -v 0
	@DEBUG=$${DEBUG:-1} $(PY) manage.py seed_demo
	@echo "Gatehouse is at http://127.0.0.1:$(PORT)/  (API docs: http://127.0.0.1:$(PORT)/api/v1/docs)"
	@echo "Starting web, worker, beat, a simulated service posting proposals and a simulated reviewer"
	@echo "(it decides what nobody took within 60 s); Ctrl-C stops them all."
	@DEBUG=$${DEBUG:-1} GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=$${GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS:-1} \
		INSIGHTS_WINDOW=$${INSIGHTS_WINDOW:-5m} INSIGHTS_CHECK_INTERVAL=$${INSIGHTS_CHECK_INTERVAL:-20s} \
		SITE_URL=http://127.0.0.1:$(PORT) $(PY) manage.py run_stack --port $(PORT) \
		--extra "simulator=$(PY) manage.py simulate_service --url http://127.0.0.1:$(PORT) --rate $${SIMULATE_RATE:-1.5}" \
		--extra "reviewers=$(PY) manage.py simulate_reviewers --delay $${SIMULATE_REVIEW_DELAY:-60}"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

check-types: install
	$(TEST_ENV) $(VENV)/bin/mypy .

# The metrics test scrapes a running Gatehouse with Debian's Prometheus (never started as a service).
prometheus:
	@if [ ! -x /usr/bin/prometheus ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "make test needs Debian's package prometheus: apt-get install -y prometheus"; exit 1; \
		fi; \
		echo "installing Debian's prometheus for the metrics test"; \
		policy=/usr/sbin/policy-rc.d; made=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; made=1; fi; \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null \
		  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; }; \
		status=$$?; [ -n "$$made" ] && rm -f $$policy; \
		[ $$status = 0 ] || { echo "could not install prometheus (apt-get install -y prometheus)"; exit 1; }; \
	fi

test: install lint check-types prometheus
	@$(TEST_ENV) $(PY) manage.py collectstatic --noinput -v 0
	$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache gatehouse.sqlite3
