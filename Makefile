# hubplane developer commands.
#   make serve [ARGS="--hub /hubs/chat=pkg.module:ChatHub"]   run the server on 127.0.0.1:8000
#   make test  [PYTEST_ARGS="-k negotiate -x"]                 run the whole test suite
#   make bench [ARGS=--quick]                                  benchmarks beside the peers (load-tests/)
# Both create .venv on first use and install what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hubplane-installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: serve test venv node-deps test-tools k8s-tools clean-venv bench

serve: $(STAMP)
	$(VENV)/bin/hubplane serve --host $(HOST) --port $(PORT) $(ARGS)

test: test-tools $(STAMP) node-deps k8s-tools
	$(PY) -m pytest -q $(PYTEST_ARGS)

venv: $(STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "error: $(PYTHON) is older than 3.11; run make with PYTHON=python3.11 (or newer)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed (or the venv is new).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

node-deps:
	@scripts/node-deps.sh

test-tools:
	@scripts/check-test-tools.sh

# helm (and kubectl where none is installed) in .tools/bin for tests/deploy.
k8s-tools: | $(PY)
	@K8S_TOOLS_PYTHON=$(PY) scripts/k8s-tools.sh

clean-venv:
	rm -rf $(VENV)

# Sets up one venv per peer under load-tests/.venvs/, runs the suite (about 9 minutes; --quick
# under 2) and writes load-tests/results/<date>/report.md with plots.
bench: $(STAMP)
	@load-tests/peers/setup.sh
	load-tests/.venvs/driver/bin/python load-tests/bench.py $(ARGS)
