#!/usr/bin/env bash
# Installs the npm packages of the project's Node folders with `npm ci` (exactly what each
# package-lock.json says) when node_modules is missing, incomplete, or older than package.json /
# package-lock.json. Safe to run repeatedly.
#
#   scripts/node-deps.sh                 both folders
#   scripts/node-deps.sh server/static   only the browser bundle of the demo page
#
# Folders: tests/node (the official SignalR clients and playwright-core, for the tests) and
# server/static (@microsoft/signalr, whose dist/browser/signalr.min.js the demo page serves and
# the wheel and the Docker image carry).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
folders=("$@")
[ ${#folders[@]} -gt 0 ] || folders=(tests/node server/static)

installed() {
	# Every dependency of package.json has its package.json under node_modules.
	node -e '
		const fs = require("fs");
		const deps = Object.keys(JSON.parse(fs.readFileSync("package.json")).dependencies || {});
		process.exit(deps.every((d) => fs.existsSync("node_modules/" + d + "/package.json")) ? 0 : 1);
	' 2>/dev/null
}

for folder in "${folders[@]}"; do
	cd "$root/$folder"
	stamp=node_modules/.hubplane-installed
	if [ -f "$stamp" ] && [ "$stamp" -nt package.json ] &&
		{ [ ! -f package-lock.json ] || [ "$stamp" -nt package-lock.json ]; } && installed; then
		continue
	fi
	command -v npm >/dev/null 2>&1 ||
		{ echo "error: npm not found: install Node.js 18+ with npm (needed for $folder)" >&2; exit 1; }
	if [ -f package-lock.json ]; then
		npm ci --no-audit --no-fund --loglevel=error </dev/null
	else
		npm install --no-audit --no-fund --loglevel=error </dev/null
	fi
	touch "$stamp"
done
