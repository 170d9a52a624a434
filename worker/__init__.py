"""Celery runtime. `celery -A worker worker` finds the app as `worker.celery`.

Celery's `-A worker` looks for `worker.app`, which is the module `worker/app.py`, and
then for `worker.celery`: that name builds the app on first use (`worker.app.current`),
so importing any worker module builds nothing.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        from worker.app import current

        return current()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
