# Plum Deploy: the two commands of the README, and the pieces they are made of.
# Everything installs itself on a fresh Debian/Ubuntu machine (run as root for the Docker parts).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR := $(CURDIR)/.run
AGENT_PORT ?= 7070
HEALTHY = $(BIN)/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(AGENT_PORT)/healthz', timeout=1)" 2>/dev/null
AGENT_ENV := AGENT_DATA_DIR=$(RUN_DIR)/agent AGENT_API_ADDR=127.0.0.1:$(AGENT_PORT) AGENT_NODE_ID=local

.PHONY: check run down agent agent-stop collection cluster cluster-down test unit integration lint sanity engine browser bench venv clean

## make run [MODE=bare|hybrid]: a lab of three systemd hosts, site.yml in MODE, the example app deployed
## through the controller to both agents (scripts/run-lab.sh); make down removes the lab
MODE ?= bare
run: venv
	scripts/docker-engine.sh
	scripts/run-lab.sh up $(MODE)

down: venv
	scripts/run-lab.sh down

## make agent: one local agent on this machine (no lab), with the example app; make agent-stop stops it
agent: venv
	@mkdir -p $(RUN_DIR)
	@if $(HEALTHY); then \
	  echo "plum-agent already answers on 127.0.0.1:$(AGENT_PORT)"; \
	else \
	  $(AGENT_ENV) setsid nohup $(BIN)/plum-agent >$(RUN_DIR)/agent.log 2>&1 & echo $$! >$(RUN_DIR)/agent.pid; \
	  for i in $$(seq 50); do $(HEALTHY) && break; sleep 0.1; done; \
	  echo "plum-agent started (pid $$(cat $(RUN_DIR)/agent.pid)), log: $(RUN_DIR)/agent.log"; \
	fi
	$(AGENT_ENV) $(BIN)/plumctl deploy hello examples/apps/hello
	@sleep 1
	$(AGENT_ENV) $(BIN)/plumctl list
	$(AGENT_ENV) $(BIN)/plumctl logs hello --tail 5
	@echo
	@echo "The app's output: $(RUN_DIR)/agent/apps/hello/logs/app.log"
	@echo "Try: $(AGENT_ENV) $(BIN)/plumctl --help      Stop the agent: make agent-stop (apps keep running until removed)"

agent-stop:
	-@$(AGENT_ENV) $(BIN)/plumctl rm hello 2>/dev/null
	-@[ -f $(RUN_DIR)/agent.pid ] && kill $$(cat $(RUN_DIR)/agent.pid) 2>/dev/null; rm -f $(RUN_DIR)/agent.pid

## make collection: the collection tarball in dist/, carrying the runtime wheel the roles install
collection: venv
	scripts/build-collection.sh dist

## make cluster: a controller and two agents on loopback, the example app deployed through the controller
cluster: venv
	$(BIN)/python scripts/local_cluster.py up

cluster-down: venv
	$(BIN)/python scripts/local_cluster.py down

## make test: install everything (venv, Docker engine, test images), lint, then run every test, the
## molecule scenarios last (they take most of the time)
test: venv engine browser lint sanity
	$(BIN)/pytest -q
	$(MAKE) molecule

## make check: the fast loop (lint, unit tests)
check: venv lint
	$(BIN)/pytest -q tests/unit

## a running Docker engine (installed from Debian when missing) and the base image the tests use
engine:
	scripts/docker-engine.sh
	scripts/build-test-image.sh

## Debian's chromium for the status page test (tests/integration/test_status_page.py drives it with Playwright)
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

unit: venv
	$(BIN)/pytest -q tests/unit

integration: venv
	$(BIN)/pytest -q tests/integration

lint: venv
	cd agent && ../$(BIN)/ruff check src ../tests ../bench ../scripts && ../$(BIN)/ruff format --check src ../tests ../bench ../scripts
	cd agent && ../$(BIN)/mypy src
	cd agent && MYPYPATH=../collections ../$(BIN)/mypy --explicit-package-bases -p ansible_collections.plum.deploy.plugins
	$(BIN)/ansible-lint --offline

## ansible-test sanity on the built collection, with no ignore files
sanity: venv
	PYTHON=$(abspath $(BIN))/python scripts/ansible-sanity.sh

## make bench: every benchmark under bench/ (about 25 minutes, alone on the machine), then docs/performance.md
## with its charts and the mode table of docs/modes.md (bench/run.py; BENCH_ARGS="--only process" for one)
bench: venv engine
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## the virtualenv, rebuilt when the pins or the package metadata change
venv: $(VENV)/.installed

$(VENV)/.installed: constraints.txt agent/pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || (apt-get update && apt-get install -y python3 python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e 'agent[test,bench]'
	@touch $@

clean: agent-stop
	rm -rf $(VENV) $(RUN_DIR)

.PHONY: host-image molecule molecule-bare molecule-hybrid molecule-containerized molecule-mixed

## the systemd test host image (sshd, its own Docker engine) that scripts/lab.py and molecule start
host-image:
	scripts/build-test-image.sh --host bookworm

## make molecule: every molecule scenario, against plum.deploy installed from its tarball (scripts/molecule.sh)
molecule: molecule-containerized molecule-mixed molecule-bare molecule-hybrid

molecule-bare molecule-hybrid molecule-containerized molecule-mixed: molecule-%: venv
	scripts/molecule.sh $*
