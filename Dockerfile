# The utterstream image: the API and the dataflows run from it (see
# docker-compose.yml). Python 3.11: Bytewax 0.21.1 has no newer wheels.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY api api
COPY cql cql
COPY dataflows dataflows
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["granian", "--interface", "asgi", "--factory", "api.app:app_from_env", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
