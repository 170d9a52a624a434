"""Message contracts: what producers send and what the worker accepts.

Models are strict (no coercion of 12 into "12") and forbid unknown fields, so a
producer's mistake is reported instead of half-understood. The same models
generate the JSON Schema files under schemas/json/. This module holds their base
model and how a task's arguments are parsed against one; the models themselves are
in `schemas.events` (shop events, and the task table) and `schemas.requests` (staff
and operator requests).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.fields import NO_NUL


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def fingerprint(self) -> str:
        """Hash of the normalised payload: equal for re-sends, different for any other content.

        Normalised, so "2026-01-01T00:00:00Z" and "...+00:00", or "49.9" and "49.90",
        count as the same event rather than as a conflict.
        """
        return self.fingerprint_and_json()[0]

    def fingerprint_and_json(self) -> tuple[str, str]:
        """The fingerprint and the normalised payload it hashes, as JSON text (stored as is)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest(), canonical


C = TypeVar("C", bound=Contract)


class PayloadError(ValueError):
    """A message that does not follow the contract; the text says how."""


def parse_task_args(model: type[C], args: Sequence[Any], kwargs: Mapping[str, Any]) -> C:
    """The contract: exactly one positional argument, a JSON object valid for `model`."""
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        raise PayloadError("the task takes exactly one positional argument, a JSON object")
    try:
        return model.model_validate(args[0])
    except ValidationError as exc:
        raise PayloadError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """A validation failure as one line: `field: problem; field: problem`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch":
            # Say what is expected, not the regular expression.
            message = ("must not contain NUL characters"
                       if (error.get("ctx") or {}).get("pattern") == NO_NUL
                       else "does not have the expected format")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def json_schema(model: type[Contract]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
