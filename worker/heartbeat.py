"""The worker's heartbeat: a file its main process touches on the consumer's own timer.

`loyalty health` calls the worker alive when the file is fresh. The timer runs in the
event loop that consumes messages, so a stuck loop or a lost broker connection (the
consumer's steps stop) lets the file go stale, while a busy pool does not:
unlike `celery inspect ping`, nothing has to wait for a free pool process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import bootsteps

log = logging.getLogger("loyalty.worker")


def touch(path: str) -> None:
    Path(path).touch()


class Heartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.entry: Any = None

    def start(self, parent: Any) -> None:
        s = parent.app.conf.loyalty_settings
        path, interval = s.heartbeat_file, max(1.0, s.heartbeat_max_age / 3)

        def beat() -> None:
            try:
                touch(path)
            except OSError as exc:
                log.error("cannot touch the heartbeat file %s: %s", path, exc)

        beat()
        self.entry = parent.timer.call_repeatedly(interval, beat)
        log.info("heartbeat", extra={"file": path, "pid": os.getpid()})

    def stop(self, parent: Any) -> None:
        if self.entry is not None:
            try:
                parent.timer.cancel(self.entry)
            except Exception:  # cancelled with the connection already
                log.debug("heartbeat timer already cancelled")
            self.entry = None
