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
# Two stages: the first builds a virtual environment (every dependency installs from a wheel, so
# no compiler is needed, and --only-binary makes sure of it); the second copies only that venv onto
# a clean slim base and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/hubplane
WORKDIR /src
# The metadata first: a change in the code alone does not invalidate the layers above.
COPY pyproject.toml README.md ./
COPY backplane ./backplane
COPY server ./server
RUN /opt/hubplane/bin/pip install --no-cache-dir --only-binary=:all: . \
 && /opt/hubplane/bin/hubplane --help >/dev/null

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
