# twamp: the three packages (common, server, client), their tests and their tools.
#   make venv   ./.venv with the three packages installed (editable) and the test/lint tools
#   make test   the whole suite (unit, property, integration, system)
#   make lint   ruff and mypy (strict on common)
#   make run    a server on loopback, a client measuring it, one twamp-monitor run of it
#   make bench  the benchmarks in bench/ (accuracy needs root), with a summary table
#   make deb    Debian packages (python3-twamp-common, twamp-server, twamp-client) in dist/
#   make rpm    RPM packages (the same three) in dist/
#   make set-version V=X.Y.Z   the version in VERSION, every pyproject.toml and pin, the spec

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the build and the tests need: venv and headers to build systemd-python,
# libsystemd for it, tshark to dissect what we put on the wire.
SYSTEM_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev tshark nftables
# What `make deb` and `make rpm` build with.
DEB_PACKAGES := debhelper dh-python python3-all python3-build python3-installer \
	python3-setuptools python3-wheel dpkg-dev fakeroot lintian
RPM_PACKAGES := rpm python3-build python3-installer python3-setuptools python3-wheel
# The system test (tests/system) builds both and boots a Debian root with systemd-nspawn;
# pmacct (nfacctd) collects our IPFIX export; prometheus (and its promtool) scrapes twamp-monitor.
TEST_PACKAGES := $(sort debootstrap systemd-container pmacct prometheus $(DEB_PACKAGES) $(RPM_PACKAGES))
PACKAGES_system-deps := $(SYSTEM_PACKAGES)
PACKAGES_deb-deps := $(DEB_PACKAGES)
PACKAGES_rpm-deps := $(RPM_PACKAGES)
PACKAGES_test-deps := $(TEST_PACKAGES)
# The one place the version is written; `make set-version V=X.Y.Z` changes it everywhere.
VERSION := $(shell cat VERSION)
DIST := dist
PKG_BUILD := build/packages
# Packages are built with the distribution's Python, never a locally installed one.
PKG_PATH := /usr/sbin:/usr/bin:/sbin:/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# apt-get that waits for a lock another apt run holds (the machine's own updates, say) instead
# of failing on it: DPkg::Lock::Timeout covers dpkg's lock; `update` takes the lists lock, which
# no option waits for, so APT_UPDATE retries it.
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600
APT_UPDATE := for _ in $$(seq 60); do $(APT) update -qq && break; \
	echo "apt-get update failed (is another apt running?); trying again in 10 s"; sleep 10; done
PYTEST_ARGS ?=
SHELL := bash
# make run: TWAMP's own ports when we may bind them, unprivileged ones otherwise.
RUN_CONTROL_PORT ?= $(shell [ "$$(id -u)" = 0 ] && echo 862 || echo 18620)
RUN_TEST_PORT ?= $(shell [ "$$(id -u)" = 0 ] && echo 863 || echo 18630)
RUN_DIR := .run

.PHONY: venv system-deps deb-deps rpm-deps test-deps test lint run clean deb rpm packages set-version bench

venv: $(VENV)/.installed

system-deps deb-deps rpm-deps test-deps:
	@command -v dpkg-query >/dev/null || exit 0; \
	missing=$$(for p in $(PACKAGES_$@); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		$(APT_UPDATE); \
		$(APT) install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: common/pyproject.toml server/pyproject.toml client/pyproject.toml tests/requirements.txt
	$(MAKE) --no-print-directory system-deps
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check \
		-e common -e server -e client -r tests/requirements.txt
	touch $@

test: venv
	@[ "$$(id -u)" != 0 ] || $(MAKE) --no-print-directory test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check common server client tests bench
	$(BIN)/ruff format --check common server client tests bench
	$(BIN)/mypy

# A twamp-server on loopback (config and log in .run/), then the classic client command against
# it, then one twamp-monitor --once run of a g711 target (its config in .run/ too), then the
# server's log lines for both; the server stops when they are done.
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
	printf '%s\n' '[monitor]' 'history =' '' '[target loopback]' \
		'address = 127.0.0.1:$(RUN_CONTROL_PORT)' 'model = g711' 'count = 50' \
		> $(RUN_DIR)/twamp-monitor.conf; \
	echo; echo "$$ twamp-monitor --config $(RUN_DIR)/twamp-monitor.conf --once"; \
	$(BIN)/twamp-monitor --config $(RUN_DIR)/twamp-monitor.conf --once || status=$$?; \
	sleep 0.2; echo; echo "twamp-server's log ($(RUN_DIR)/twamp-server.log):"; \
	cat $(RUN_DIR)/twamp-server.log; exit $$status

# The source tree the packages are built from: the three projects and what they install.
PKG_SOURCES := VERSION common server client etc docs packaging
define copy_sources
	rm -rf $(1) && mkdir -p $(1)
	tar -c --exclude='*.egg-info' --exclude=__pycache__ --exclude=build $(PKG_SOURCES) | tar -x -C $(1)
endef

# Debian packages: packaging/debian becomes debian/ of a copy of the tree, dpkg-buildpackage
# builds the binary packages, lintian checks them.
deb:
	@$(MAKE) --no-print-directory deb-deps
	$(call copy_sources,$(PKG_BUILD)/deb/twamp-$(VERSION))
	cd $(PKG_BUILD)/deb/twamp-$(VERSION) && cp -a packaging/debian debian && \
		cp packaging/sysusers/twamp-server.conf debian/twamp-server.sysusers && \
		PATH=$(PKG_PATH) dpkg-buildpackage -us -uc -b
	mkdir -p $(DIST)
	cp $(PKG_BUILD)/deb/*_$(VERSION)_all.deb $(DIST)/
	PATH=$(PKG_PATH) lintian $(PKG_BUILD)/deb/twamp_$(VERSION)_*.changes

# RPM packages, noarch, from packaging/rpm/twamp.spec; the version comes from VERSION. The
# build dependencies are Debian packages here (rpm-deps), which rpm does not know: --nodeps.
rpm:
	@$(MAKE) --no-print-directory rpm-deps
	$(call copy_sources,$(PKG_BUILD)/rpm/twamp-$(VERSION))
	mkdir -p $(PKG_BUILD)/rpm/SOURCES $(DIST)
	tar -C $(PKG_BUILD)/rpm -czf $(PKG_BUILD)/rpm/SOURCES/twamp-$(VERSION).tar.gz twamp-$(VERSION)
	PATH=$(PKG_PATH) rpmbuild -bb --nodeps --define "_topdir $(CURDIR)/$(PKG_BUILD)/rpm" \
		--define "twamp_version $(VERSION)" packaging/rpm/twamp.spec
	cp $(PKG_BUILD)/rpm/RPMS/noarch/*-$(VERSION)-*.noarch.rpm $(DIST)/

packages: deb rpm

# make set-version V=0.2.0: VERSION, the three pyproject.toml and their twamp-common pins.
set-version:
	@[ -n "$(V)" ] || { echo "usage: make set-version V=X.Y.Z"; exit 2; }
	echo "$(V)" > VERSION
	sed -i 's/^version = ".*"/version = "$(V)"/' common/pyproject.toml server/pyproject.toml client/pyproject.toml
	sed -i 's/"twamp-common==[^"]*"/"twamp-common==$(V)"/' server/pyproject.toml client/pyproject.toml
	@echo "Now add a packaging/debian/changelog entry for $(V) (dch -v $(V))."

# Figures are ratios against baselines measured in the same run; bench/README.md explains them.
bench: venv
	@command -v ping >/dev/null || [ "$$(id -u)" != 0 ] || \
		$(APT) install -y -qq iputils-ping >/dev/null
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
