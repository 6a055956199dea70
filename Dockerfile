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
COPY live live
COPY llm llm
COPY runtime runtime
COPY loader loader
RUN uv sync --frozen --no-dev && .venv/bin/python -m api assets
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1
EXPOSE 8000
# The API: granian (workers respawned when one dies) under the supervisor
# that restarts granian when it dies (api/commands/serve.py), the container's
# main process; the container's restart policy restarts the supervisor.
CMD ["python", "-m", "api", "serve", "--host", "0.0.0.0", "--port", "8000"]
