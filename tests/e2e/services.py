"""Private PostgreSQL and Redis servers that a test may stop and restart at will.

The machine's shared servers are left alone; these run on free loopback ports in
the test's temporary folder and are removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            if up:
                return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} did not go {'up' if up else 'down'}")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found and not shutil.which("pg_ctl"):
            _unavailable("pg_ctl is not installed")
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("pg_ctl") or "").parent
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        # initdb refuses to run as root; run the server as the postgres user then.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.prefix, str(self.bin / tool), *args], capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")
        _wait_port(self.port, up=True)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait_port(self.port, up=False)

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A Redis with the persistence docker-compose.yml configures (append-only file)."""

    def __init__(self, root: Path) -> None:
        if not shutil.which("redis-server"):
            _unavailable("redis-server is not installed")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.root), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--logfile", str(self.root / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """SIGTERM: Redis exits; what it acknowledged is in the append-only file."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        _wait_port(self.port, up=False)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (its own port, node name and data), to stop and start.

    The machine's shared node is left alone. Its messages are durable and persistent, as
    the worker declares and the producers publish them, so a restart must lose none.
    """

    def __init__(self, root: Path) -> None:
        if not shutil.which("rabbitmq-server") or not shutil.which("rabbitmqctl"):
            _unavailable("rabbitmq-server is not installed")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:  # the scripts run the node as the rabbitmq user
            shutil.chown(root, "rabbitmq")
            shutil.chown(root / "enabled_plugins", "rabbitmq")
        self.port = free_port()
        self.node = f"loyalty-test-{self.port}@localhost"
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(free_port()),
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(root / "log"),
                    "RABBITMQ_PID_FILE": str(root / "node.pid"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
                    "RABBITMQ_CONFIG_FILE": str(root / "none")}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def ctl(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(["rabbitmqctl", "-q", "-n", self.node, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:  # await_startup fails at once while the node is not reachable yet
            try:
                self.ctl("await_startup", "--timeout", "60", timeout=90)
                break
            except AssertionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(1)
        _wait_port(self.port, up=True, timeout=60)

    def stop(self) -> None:
        """A clean stop: what RabbitMQ confirmed of durable queues is on disk."""
        self.ctl("stop")
        if self.proc is not None:
            self.proc.wait(60)
        _wait_port(self.port, up=False)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
