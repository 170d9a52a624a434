"""A private PostgreSQL cluster for the benchmark: its own data folder, port and settings.

The figures of `bench/run.py` must not depend on whatever server the machine happens to
run, nor on how its operator tuned it. So the bench initialises a cluster in a temporary
folder with the settings below, the same ones docker-compose.yml gives the product's
PostgreSQL (each explained there), runs everything against it, and removes it after.

Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

#: The settings docker-compose.yml gives PostgreSQL, where each has its reason. The bench
#: adds only what measuring needs (`MEASURING`).
SETTINGS: dict[str, str] = {
    "shared_buffers": "4GB",
    "wal_compression": "lz4",
    "checkpoint_timeout": "30min",
    "max_wal_size": "16GB",
    "min_wal_size": "2GB",
    "checkpoint_completion_target": "0.9",
    "wal_buffers": "64MB",
    "random_page_cost": "1.1",
    "effective_cache_size": "12GB",
    "shared_preload_libraries": "pg_stat_statements",
    "track_io_timing": "on",
}
#: What only the bench needs: plans of slow statements with their buffers
#: (`EXPLAIN (ANALYZE, BUFFERS)` through auto_explain, switched on per drain), and
#: per-statement WAL figures.
MEASURING: dict[str, str] = {
    "shared_preload_libraries": "pg_stat_statements,auto_explain",
    "pg_stat_statements.track": "all",
    "track_wal_io_timing": "on",
    "auto_explain.log_min_duration": "-1",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_wal": "on",
    "auto_explain.log_timing": "off",
    "auto_explain.log_nested_statements": "on",
    "logging_collector": "off",
}


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise SystemExit("initdb not found: install PostgreSQL's server binaries")
    return versions[-1].parent


class PrivateCluster:
    """initdb into a temporary folder, start on `port`, stop and remove on `close`."""

    def __init__(self, port: int = 55432, settings: dict[str, str] | None = None,
                 defaults: bool = False) -> None:
        """`defaults`: PostgreSQL's own settings instead of SETTINGS (what they change)."""
        self.port = port
        self.settings = {**({} if defaults else SETTINGS), **MEASURING, **(settings or {})}
        self.bindir = _bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="loyalty-bench-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.user = None if os.geteuid() else "postgres"
        if self.user:
            record = pwd.getpwnam(self.user)
            os.chown(self.folder, record.pw_uid, record.pw_gid)

    def _run(self, *args: str) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PrivateCluster:
        # Identifiers (event, order and contact ids) are compared byte by byte: nothing in
        # the ledger sorts text by a language's rules, and the C collation is the cheap one.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--lc-collate=C", "--lc-ctype=C.UTF-8")
        lines = [f"{k} = '{v}'" for k, v in self.settings.items()]
        lines += [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                  f"unix_socket_directories = '{self.folder}'"]
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join(lines) + "\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.dsn(), autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return self

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def postmaster(self) -> int:
        """The server's process id (every backend is its child)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def version(self) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
