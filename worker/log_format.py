"""Structured logs: one JSON object per line, or text with the same facts, secrets masked.

Masking works on the final text, so a password cannot leak through a library's
own log line (a connection error that echoes its URL) any more than through ours.
The text format carries every field of the JSON one as `key=value` after the
message, values written as JSON, so both formats say the same things.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from loyalty.settings import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class SecretMask:
    """Masks secrets in finished log text. Not a logging.Filter: a filter sees the record
    before a library's message is formatted, so the formatters call `mask` instead."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            # Always inside a URL; bare only when long enough not to be an ordinary word
            # (a password "loyalty" must not turn every task name into "***.events").
            text = text.replace(f":{secret}@", ":***@")
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        return text


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The facts a line carries beyond its message: the `extra` of the logging call."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _json_value(value: Any) -> Any:
    """JSON values, not Python reprs: UUIDs, Decimals and datetimes as strings."""
    return json.loads(json.dumps(value, default=str))


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
        entry.update(fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.masker.mask(json.dumps(entry, default=str))


class MaskingFormatter(logging.Formatter):
    """For people: the message, then each field as key=value (strings bare unless they
    need quotes, everything else as JSON)."""

    def __init__(self, mask: SecretMask, fmt: str) -> None:
        super().__init__(fmt)
        self.masker = mask

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = fields(record)
        if extra:
            pairs = " ".join(f"{key}={_text_value(value)}" for key, value in extra.items())
            if record.exc_info or record.stack_info:
                first, _, rest = text.partition("\n")
                text = f"{first} {pairs}\n{rest}"
            else:
                text = f"{text} {pairs}"
        return self.masker.mask(text)


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and value.isprintable() \
            and not any(c in value for c in ' "=\\'):
        return value
    return json.dumps(_json_value(value), ensure_ascii=False, separators=(",", ":"))


class QuietSuccess(logging.Filter):
    """Drops Celery's "Task ... succeeded in ...: <repr of the result>" and "Task ...
    retry: Retry in ...: <repr of the exception>" lines.

    Our own line says what happened (applied, duplicate, dead-lettered, rejected,
    retrying), once; Celery's says `succeeded` even for a dead-lettered task, and reprs
    the whole result.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from celery.app import trace

        return record.msg not in (trace.LOG_SUCCESS, trace.LOG_RETRY)


def configure(logger: logging.Logger, settings: Settings) -> None:
    mask = SecretMask(settings.secrets())
    formatter: logging.Formatter
    if settings.log_format == "json":
        formatter = JsonFormatter(mask)
    else:
        formatter = MaskingFormatter(mask, "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    for handler in logger.handlers:
        handler.setFormatter(formatter)
    trace_logger = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, QuietSuccess) for f in trace_logger.filters):
        trace_logger.addFilter(QuietSuccess())
