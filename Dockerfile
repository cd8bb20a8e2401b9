# sync-service: one image for the daemon (`run`, the default), `migrate` and the Mixpeek
# `emulator` (see docker-compose.yml). No secret is baked in: MIXPEEK_API_KEY, QDRANT_API_KEY,
# SYNC_API_TOKEN and the database password come from the environment at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed numeric uid/gid, so orchestrators can check "runs as non-root" and volumes can be
# chowned from outside.
RUN groupadd --system --gid 10001 sync \
    && useradd --system --uid 10001 --gid sync --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin sync

WORKDIR /app

# Editable install on purpose: the package stays at /app/sync_service, so the Alembic folder is
# found where store.MIGRATIONS_DIR looks for it (<package parent>/migrations = /app/migrations).
COPY pyproject.toml README.md alembic.ini ./
COPY migrations/ migrations/
COPY sync_service/ sync_service/
# Byte-compiled here: PYTHONDONTWRITEBYTECODE (and a read-only /app for uid 10001) means no
# process writes __pycache__, so each would otherwise compile the package from source at start.
RUN pip install --no-cache-dir -e . \
    && python -m compileall -q sync_service migrations \
    && mkdir -p /app/data \
    && chown sync:sync /app/data

# Defaults of the embedded mode resolve under /app/data (sqlite:///./data/sync.db, ./data/qdrant);
# compose points the daemon at PostgreSQL and a Qdrant server instead.
USER 10001:10001

# The control API (SYNC_API_PORT). Inside a container set SYNC_API_HOST=0.0.0.0, which in turn
# requires SYNC_API_TOKEN.
EXPOSE 8080

# `run` stops claiming work on SIGTERM and gives the work in flight SYNC_SHUTDOWN_GRACE seconds:
# give the container a longer stop timeout than that (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# Liveness of the daemon's control API; SYNC_API_PORT=0 (API off) counts as healthy. Other
# commands run from this image (migrate, emulator) override or disable it in compose.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD [ "${SYNC_API_PORT:-8080}" = "0" ] || python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${SYNC_API_PORT:-8080}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["sync-service"]
CMD ["run"]
