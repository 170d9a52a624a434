# Image of the loyalty-ledger worker: `loyalty worker` by default, `loyalty db upgrade` for
# the one-shot migration. Configuration comes only from LOYALTY_* environment variables
# (see loyalty/settings.py); the defaults point at 127.0.0.1, which inside a container is
# the container itself, so LOYALTY_DATABASE_URL, LOYALTY_BROKER_URL and
# LOYALTY_RESULT_BACKEND must always be set (docker-compose.yml does).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 loyalty \
    && useradd --system --uid 10001 --gid loyalty --home-dir /home/loyalty --create-home \
       --shell /usr/sbin/nologin loyalty

# Build from a scratch directory and delete it afterwards, so only the installed package
# (with its migrations and JSON schemas as package data) is in the image, and nothing in
# the working directory can shadow it on sys.path.
WORKDIR /tmp/src
# README.md is the project's `readme` in pyproject.toml: the build fails without it.
COPY pyproject.toml README.md ./
COPY loyalty/ loyalty/
COPY worker/ worker/
COPY tasks/ tasks/
COPY schemas/ schemas/
RUN pip install --no-cache-dir . \
    && cd / \
    && rm -rf /tmp/src

WORKDIR /home/loyalty
USER loyalty:loyalty

# Exec form: the worker is PID 1 and gets SIGTERM itself (Celery's warm shutdown).
CMD ["loyalty", "worker"]
