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
SHELL := bash
# make run: TWAMP's own ports when we may bind them, unprivileged ones otherwise.
RUN_CONTROL_PORT ?= $(shell [ "$$(id -u)" = 0 ] && echo 862 || echo 18620)
RUN_TEST_PORT ?= $(shell [ "$$(id -u)" = 0 ] && echo 863 || echo 18630)
RUN_DIR := .run

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

# A twamp-server on loopback (config and log in .run/), then the classic client command against
# it, then the server's log lines for that measurement; the server stops when the client is done.
run: venv
	@mkdir -p $(RUN_DIR)
	@printf '%s\n' 'control_port = $(RUN_CONTROL_PORT)' 'test_port = $(RUN_TEST_PORT)' \
		'listen = 127.0.0.1 ::1' 'keys_file =' 'log_level = info' > $(RUN_DIR)/twamp-server.conf
	@$(BIN)/twamp-server --config $(RUN_DIR)/twamp-server.conf --log-format console \
		2> $(RUN_DIR)/twamp-server.log & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT; \
	for _ in $$(seq 100); do \
		grep -q 'twamp-server ready' $(RUN_DIR)/twamp-server.log && break; \
		kill -0 $$server 2>/dev/null || { cat $(RUN_DIR)/twamp-server.log; exit 1; }; \
		sleep 0.1; \
	done; \
	echo "$$ twamp-client 127.0.0.1:$(RUN_CONTROL_PORT) -c 5 -i 500 -s"; \
	$(BIN)/twamp-client 127.0.0.1:$(RUN_CONTROL_PORT) -c 5 -i 500 -s; status=$$?; \
	sleep 0.2; echo; echo "twamp-server's log ($(RUN_DIR)/twamp-server.log):"; \
	cat $(RUN_DIR)/twamp-server.log; exit $$status

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
