FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY alert_rules ./alert_rules
RUN pip install --no-cache-dir .
CMD ["churnwatch", "worker"]
