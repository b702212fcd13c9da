#!/usr/bin/env bash
# Checks (and where possible installs) the programs the test suite needs besides Python:
# redis-server, nginx, chromium, node >= 18 and npm. Exits non-zero with a message naming what to install.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }

can_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
	echo "installing $* with apt-get (we are root)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null >&2
	apt-get install -y -qq "$@" </dev/null >&2
}

# --- redis-server (private instances on free loopback ports; never the shared 6379)
if [ -n "${REDIS_URL:-}" ]; then
	: # the tests use the Redis server at $REDIS_URL
elif ! command -v redis-server >/dev/null 2>&1; then
	if can_apt; then
		apt_install redis-server
		# the Debian package may start a system instance; the tests start their own
	fi
	command -v redis-server >/dev/null 2>&1 ||
		die "redis-server not found: install Redis 7 (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL"
fi

# --- nginx (a real round-robin balancer for the no-sticky-sessions tests)
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
	if can_apt; then
		apt_install nginx-light
		# the Debian package starts a system instance on port 80; the tests run their own
		(service nginx stop || pkill -f "nginx: master") >/dev/null 2>&1 || true
	fi
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] ||
		die "nginx not found: install it (Debian/Ubuntu: apt-get install nginx-light; macOS: brew install nginx)"
fi

# --- chromium (Debian's; the browser tests drive it with playwright-core, never a downloaded one)
if [ -z "${HUBPLANE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
	if can_apt; then
		apt_install chromium
	fi
	command -v chromium >/dev/null 2>&1 ||
		die "chromium not found: install it (Debian/Ubuntu: apt-get install chromium) or set HUBPLANE_CHROMIUM to a Chromium executable"
fi

# --- node >= 18 and npm (the official @microsoft/signalr client runs in Node)
command -v node >/dev/null 2>&1 ||
	die "node not found: install Node.js 18 or newer (Node 20 recommended, e.g. apt-get install nodejs npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$node_major" -ge 18 ] 2>/dev/null ||
	die "node $(node --version 2>/dev/null || echo '?') is too old: install Node.js 18 or newer (Node 20 recommended)"
command -v npm >/dev/null 2>&1 ||
	die "npm not found: install npm (it comes with Node.js; Debian: apt-get install npm)"

exit 0
