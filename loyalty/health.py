"""`loyalty health`: is this deployment working? Four checks, each with what it found.

The database and the broker must answer, the schema must be at the code's head
revision, and the worker's heartbeat file must be fresh (see worker/heartbeat.py).
Each check is bounded by a short timeout, so the command answers in a few seconds even
when a service hangs, as a container health check must.
"""

from __future__ import annotations

import os
import time
from typing import Any

from loyalty.settings import Settings

TIMEOUT = 5


def _database(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from loyalty import db
    from loyalty.roles import url_of

    try:
        engine = create_engine(url_of(settings.database_url, "LOYALTY_DATABASE_URL"),
                               poolclass=NullPool, connect_args={"connect_timeout": TIMEOUT})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current, head = db.current_revision(engine), db.head_revision()
        finally:
            engine.dispose()
    except Exception as exc:
        failed = {"ok": False, "detail": _first_line(exc)}
        return failed, {"ok": False, "detail": "database unreachable"}
    migrations = {"ok": current == head, "current": current, "head": head}
    if current != head:
        migrations["detail"] = "run `loyalty db upgrade`"
    return {"ok": True}, migrations


def _broker(settings: Settings) -> dict[str, Any]:
    from kombu import Connection

    try:
        with Connection(settings.broker_url, connect_timeout=TIMEOUT) as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT)
            conn.default_channel  # noqa: B018 - opens a channel: the broker answers
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "detail": _first_line(exc)}


def _heartbeat(settings: Settings) -> dict[str, Any]:
    path = settings.heartbeat_file
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return {"ok": False, "file": path, "detail": "no heartbeat file: is the worker running?"}
    found = {"ok": age <= settings.heartbeat_max_age, "file": path,
             "age_seconds": round(age, 1)}
    if not found["ok"]:
        found["detail"] = f"older than {settings.heartbeat_max_age} s"
    return found


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check(settings: Settings) -> dict[str, Any]:
    database, migrations = _database(settings)
    checks = {"database": database, "broker": _broker(settings), "migrations": migrations,
              "heartbeat": _heartbeat(settings)}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
