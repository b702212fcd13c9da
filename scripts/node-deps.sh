#!/usr/bin/env bash
# Installs the official SignalR JS clients in tests/node when node_modules is missing or
# older than package.json / package-lock.json. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"

stamp=node_modules/.hubplane-installed
if [ -f "$stamp" ] && [ "$stamp" -nt package.json ] &&
	{ [ ! -f package-lock.json ] || [ "$stamp" -nt package-lock.json ]; } &&
	[ -f node_modules/@microsoft/signalr/package.json ] &&
	[ -f node_modules/@microsoft/signalr-protocol-msgpack/package.json ]; then
	exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "error: npm not found: install Node.js 18+ with npm" >&2; exit 1; }
if [ -f package-lock.json ]; then
	npm ci --no-audit --no-fund --loglevel=error </dev/null
else
	npm install --no-audit --no-fund --loglevel=error </dev/null
fi
touch "$stamp"
