# One image for every service; the command picks which (see compose.yaml).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json HOST=0.0.0.0
COPY pyproject.toml README.md ./
COPY helpdesk ./helpdesk
COPY shared ./shared
COPY services ./services
COPY sandbox ./sandbox
RUN pip install --no-cache-dir . && useradd --system --uid 10001 helpdesk
USER helpdesk
ENTRYPOINT ["helpdesk"]
CMD ["run"]
