# twamp: the three packages (common, server, client), their tests and their tools.
#   make venv   ./.venv with the three packages installed (editable) and the test/lint tools
#   make test   the whole suite (unit, property, integration, system)
#   make lint   ruff and mypy (strict on common)
#   make run    a server on loopback and a client measuring it

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the build and the tests need: venv and headers to build systemd-python,
# libsystemd for it, tshark to dissect what we put on the wire.
SYSTEM_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev tshark
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: venv system-deps test lint run clean

venv: $(VENV)/.installed

system-deps:
	@command -v dpkg-query >/dev/null || exit 0; \
	missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: common/pyproject.toml server/pyproject.toml client/pyproject.toml tests/requirements.txt
	$(MAKE) --no-print-directory system-deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check \
		-e common -e server -e client -r tests/requirements.txt
	touch $@

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check common server client tests
	$(BIN)/ruff format --check common server client tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
