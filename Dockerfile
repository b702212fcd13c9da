# hubplane container image.
#
#   docker build -t hubplane .
#   docker run -p 8000:8000 -e REDIS_URL=redis://redis:6379/0 hubplane --hub /hubs/chat=myapp.hubs:ChatHub
#
# Every `hubplane serve` flag is also an environment variable (HUBPLANE_HUBS, HUBPLANE_LOG_LEVEL,
# HUBPLANE_DRAIN_TIMEOUT, HUBPLANE_TOKEN_SECRET, ...; REDIS_URL as is); arguments after the image
# name are passed to `hubplane serve`. Hub modules are imported from /app: build your own image
# FROM this one and COPY your package there.
#
# Three stages: `web` installs the SignalR browser bundle of the demo page with npm ci from
# server/static/package-lock.json; `build` builds a virtual environment with exactly the
# versions of uv.lock (every dependency from a wheel, so no compiler is needed: --no-build
# makes sure of it), hubplane's wheel carrying the bundle; the last copies only that venv onto
# a clean slim base and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# The demo page's official SignalR browser bundle, installed by npm from its lock; only
# dist/browser/signalr.min.js (and its package.json) go on to the build stage.
FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY server/static/package.json server/static/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM ${PYTHON_IMAGE} AS build
# The same uv as the Makefile's UV_VERSION (tests/deploy/test_dockerfile.py checks).
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/hubplane
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# The lock and the metadata first: the dependencies' layer survives a change in the code.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-build --no-install-project --python /usr/local/bin/python
COPY backplane ./backplane
COPY server ./server
COPY --from=web /web/node_modules/@microsoft/signalr/package.json \
     ./server/static/node_modules/@microsoft/signalr/
COPY --from=web /web/node_modules/@microsoft/signalr/dist/browser/signalr.min.js \
     ./server/static/node_modules/@microsoft/signalr/dist/browser/
RUN uv sync --locked --no-dev --no-build --no-editable --python /usr/local/bin/python \
 && /opt/hubplane/bin/hubplane --help >/dev/null \
 && /opt/hubplane/bin/python -I -c "from server.web import bundle_version; assert bundle_version()"

FROM ${PYTHON_IMAGE} AS runtime
# A fixed uid/gid so that Kubernetes' runAsUser/runAsNonRoot and file ownership agree with it.
RUN groupadd --system --gid 10001 hubplane \
 && useradd --system --no-log-init --uid 10001 --gid hubplane \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin hubplane
COPY --from=build /opt/hubplane /opt/hubplane
ENV PATH=/opt/hubplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HUBPLANE_HOST=0.0.0.0 \
    HUBPLANE_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# The server drains on SIGTERM (readiness off, clients told to reconnect elsewhere) within
# HUBPLANE_DRAIN_TIMEOUT seconds: give `docker stop` a --time longer than that.
STOPSIGNAL SIGTERM
# The slim image has no curl: the CLI itself asks http://127.0.0.1:$HUBPLANE_PORT/healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["hubplane", "healthcheck"]
ENTRYPOINT ["hubplane", "serve"]
