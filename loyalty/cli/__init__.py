"""`loyalty`: operate the ledger from a shell.

Reads take `--json` and then print exactly one JSON document. Every error is
one line on stderr and a non-zero exit: 1 for a refused or failed operation,
2 for bad usage, 3 for a database that is not ready.

`main` holds the program and its exit codes, `output` the rendering, `context`
what commands share; each command group has a module of its own.
"""

from loyalty.cli.main import cli, main
from loyalty.cli.output import printable

__all__ = ["cli", "main", "printable"]
