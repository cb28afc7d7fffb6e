# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MICROPYPATH := .frozen:$(CURDIR)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test lint bench clean debs browser

setup: debs $(VENV)/.installed

# Debian packages: mosquitto (production broker, used by the tests), nats-server (the
# clustered broker: tests/test_broker_cluster.py, docs/broker-cluster.md) and socat
# (virtual serial buses).
debs:
	@if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v socat >/dev/null 2>&1 \
			|| { ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; }; then \
		echo "installing mosquitto, nats-server and socat with apt-get"; \
		$(SUDO) apt-get install -y mosquitto nats-server socat >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y mosquitto nats-server socat; }; \
	fi

# Debian's chromium, for the status page's browser tests (tests/test_status_page.py); the
# demo does not need it.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "installing chromium with apt-get"; \
		$(SUDO) apt-get install -y chromium >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y chromium; }; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: setup
	$(BIN)/edgectl demo

# two workers, a test file each at a time (pytest-xdist): most of the suite waits on
# real processes (agents, brokers, gateways), so two at once take about two thirds of
# the time of one after the other
test: setup browser lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# the linter configured in pyproject.toml ([tool.ruff])
lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/edgectl bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
