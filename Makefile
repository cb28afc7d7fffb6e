# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LIB := lib
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MICROPYPATH := .frozen:$(CURDIR):$(CURDIR)/$(LIB)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup demo test bench clean debs

setup: debs $(VENV)/.installed $(LIB)/umqtt/simple.py

# Debian packages: mosquitto (production broker, used by the tests) and socat (virtual serial buses).
debs:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] || ! command -v socat >/dev/null 2>&1; then \
		echo "installing mosquitto and socat with apt-get"; \
		$(SUDO) apt-get install -y mosquitto socat >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y mosquitto socat; }; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# umqtt.simple from micropython-lib: its sdist has no setup.py, so fetch it with unearth by name.
$(LIB)/umqtt/simple.py: $(VENV)/.installed
	@rm -rf $(LIB)/.dl && mkdir -p $(LIB)/.dl
	$(BIN)/unearth --no-binary --download $(LIB)/.dl micropython-umqtt.simple >/dev/null
	tar -xzf $(LIB)/.dl/micropython-umqtt.simple-*.tar.gz -C $(LIB)/.dl
	mkdir -p $(LIB)/umqtt && cp $(LIB)/.dl/micropython-umqtt.simple-*/umqtt/simple.py $(LIB)/umqtt/simple.py
	@rm -rf $(LIB)/.dl

demo: setup
	$(BIN)/edgectl demo

test: setup
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/edgectl bench

clean:
	rm -rf $(VENV) $(LIB) build *.egg-info .pytest_cache
