# hubplane: multi-stage build; the final image has no build tools and runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backplane ./backplane
COPY server ./server
RUN python -m venv /opt/hubplane \
 && /opt/hubplane/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home hubplane
COPY --from=build /opt/hubplane /opt/hubplane
ENV PATH=/opt/hubplane/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HUBPLANE_HOST=0.0.0.0 \
    HUBPLANE_PORT=8000
USER 10001
EXPOSE 8000
ENTRYPOINT ["hubplane", "serve"]
