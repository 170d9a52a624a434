"""Structured logs: one JSON object per line, with secrets masked.

Masking works on the final text, so a password cannot leak through a library's
own log line (a connection error that echoes its URL) any more than through ours.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from loyalty.settings import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class SecretMask(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            # Always inside a URL; bare only when long enough not to be an ordinary word
            # (a password "loyalty" must not turn every task name into "***.events").
            text = text.replace(f":{secret}@", ":***@")
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.masker = mask

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.masker.mask(json.dumps(entry, default=str))


class MaskingFormatter(logging.Formatter):
    def __init__(self, mask: SecretMask, fmt: str) -> None:
        super().__init__(fmt)
        self.masker = mask

    def format(self, record: logging.LogRecord) -> str:
        return self.masker.mask(super().format(record))


def configure(logger: logging.Logger, settings: Settings) -> None:
    mask = SecretMask(settings.secrets())
    formatter: logging.Formatter
    if settings.log_format == "json":
        formatter = JsonFormatter(mask)
    else:
        formatter = MaskingFormatter(mask, "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    for handler in logger.handlers:
        handler.setFormatter(formatter)
