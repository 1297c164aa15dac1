# The pushgate gateway. `docker build -t pushgate .` from the repository root;
# deploy/compose.yaml runs it with PostgreSQL, a one-shot migration, the API and a worker.
# Alone it runs the embedded SQLite gateway, its database in the /data volume:
#   docker run -p 8000:8000 -v pushgate-data:/data -e PUSHGATE_SECRET_KEY=… pushgate

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The package as a wheel, from the same pyproject.toml `make install` reads.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheel with the postgres extra (asyncpg, psycopg): the same drivers `make test` installs
# (the dev extra includes it), so one image serves SQLite and PostgreSQL.
COPY --from=build /wheels /wheels
RUN python -m pip install "$(ls /wheels/pushgate-*.whl)[postgres]" \
    && rm -rf /wheels

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin pushgate \
    && mkdir -p /data \
    && chown pushgate:pushgate /data
USER pushgate
WORKDIR /data
VOLUME ["/data"]

ENV PUSHGATE_DATABASE_URL=sqlite:////data/pushgate.db \
    PUSHGATE_HOST=0.0.0.0 \
    PUSHGATE_PORT=8000
EXPOSE 8000

# 503 (database unreachable) and no answer both fail it; a worker container disables it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PUSHGATE_PORT', '8000'), timeout=4)"

# The schema first (safe to repeat), then the API with the dispatcher in the same process.
CMD ["sh", "-c", "pushgate migrate && exec pushgate serve"]
