# One image for every service; the command picks which (compose.yaml, deploy/k8s/).
# Stage 1 builds a virtualenv with the package and its dependencies; stage 2 is a slim Python with
# only that virtualenv, run as uid 10001. No nats-server binary in it: the `embedded` extra is for
# laptops and tests, the image always talks to the NATS that NATS_URL names.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/helpdesk
COPY pyproject.toml README.md ./
COPY helpdesk ./helpdesk
COPY shared ./shared
COPY services ./services
COPY sandbox ./sandbox
RUN /opt/helpdesk/bin/pip install . \
    && /opt/helpdesk/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="Helpdesk Verify" \
      org.opencontainers.image.description="Verify a caller against their Okta factors from Slack before any reset; Okta telephony inline hook." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
RUN groupadd --system --gid 10001 helpdesk \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin helpdesk
COPY --from=build /opt/helpdesk /opt/helpdesk
# METRICS_PORT: /healthz, /readyz and /metrics of every service, apart from the public routes.
ENV PATH=/opt/helpdesk/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    METRICS_PORT=9090
WORKDIR /app
USER 10001:10001
EXPOSE 8080 8081 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('METRICS_PORT', '9090') + '/healthz', timeout=2)"]
ENTRYPOINT ["helpdesk"]
CMD ["run"]
