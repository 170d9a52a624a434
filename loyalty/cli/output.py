"""How the command line prints: one JSON document with --json, else text that cannot
break a line or a table; errors as one line on stderr."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Any

import click

JSON_HELP = "Print one JSON document instead of text."

#: A table's columns: a heading, and how to get the cell from a row.
Columns = list[tuple[str, Callable[[dict], Any]]]


def emit(data: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text(data) if text else as_text(data))


def printable(value: Any) -> str:
    """A stored value as text that cannot break a line or a table.

    Ids and descriptions are whatever producers sent: a tab, a newline, an escape
    sequence or an invisible format character is shown escaped (`\\t`, `\\x1b`,
    `\\u200b`), never written to the terminal. Booleans read as in JSON.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    named = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    if ch in named:
        return named[ch]
    if unicodedata.category(ch) == "Zs":
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def as_text(data: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{printable(key)}:")
                lines.append(as_text(value, indent + 1))
            else:
                lines.append(f"{pad}{printable(key)}: {printable(value)}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(as_text(item, indent) + ("\n" if isinstance(item, dict) else "")
                         for item in data).rstrip("\n")
    return f"{pad}{printable(data)}"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, Callable[[dict], Any]]],
           next_cursor: str | None = None) -> str:
    cells = [[printable(get(row)) for _, get in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    if not rows:
        lines.append("(none)")
    if next_cursor:
        lines.append(f"more: --cursor {next_cursor}")
    return "\n".join(lines)


def error_line(message: str) -> None:
    """One line on stderr, whatever the message quotes (an id with a newline stays escaped)."""
    click.echo(f"error: {printable(message)}", err=True)


