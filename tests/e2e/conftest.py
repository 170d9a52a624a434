"""Real worker processes, started the way an operator starts them: `loyalty worker`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import (
    IN_CI,
    RABBITMQ_URL,
    REDIS_HOST,
    RUN_ID,
    drop_database,
    fresh_database,
    owner_url,
    require,
    superuser_url,
)
from tests.e2e import cli_server

BIN = Path(sys.executable).parent
LOYALTY = str(BIN / "loyalty")


@pytest.fixture(scope="session")
def redis_index() -> Iterator[int]:
    """A Redis database of its own for this run, so parallel runs never steal messages."""
    require(REDIS_HOST, 6379, "Redis")
    # Not 14 and 15: bench/run.py empties them (results and broker) whenever it runs.
    for index in range(2, 14):
        client = redis.Redis(host=REDIS_HOST, port=6379, db=index)
        if client.set("loyalty-test-lock", RUN_ID, nx=True, ex=3600):
            client.flushdb()
            client.set("loyalty-test-lock", RUN_ID, ex=3600)
            yield index
            client.flushdb()
            client.close()
            return
        client.close()
    pytest.fail("no free Redis database between 2 and 13 for this test run")


def empty_redis(url: str) -> None:
    """Empty this run's Redis database, keeping its claim on it: what an earlier test's
    killed worker left (queued, held in its processing lists) must not reach this one."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        client.set("loyalty-test-lock", RUN_ID, ex=3600)
    finally:
        client.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Env:
    """Environment of one isolated deployment: its own database and broker namespace."""

    def __init__(self, db_url: str, broker_url: str, result_backend: str, tmp: Path) -> None:
        self.db_url = db_url
        self.broker_url = broker_url
        self.result_backend = result_backend
        self.tmp = tmp
        self.broker: Any = None
        self.workers: list[Worker] = []
        self.shop: Any = None
        self.vars = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")},
            "LOYALTY_DATABASE_URL": db_url,
            "LOYALTY_OWNER_DATABASE_URL": owner_url(db_url),
            "LOYALTY_BOOTSTRAP_DATABASE_URL": superuser_url(db_url),
            "LOYALTY_BROKER_URL": broker_url,
            "LOYALTY_RESULT_BACKEND": result_backend,
            "LOYALTY_LOG_FORMAT": "json",
        }

    def close(self) -> None:
        """At the end of a test: nothing is asserted any more, so no warm shutdown to wait
        for (seconds per worker); the broker namespace and the database go with it."""
        for worker in self.workers:
            worker.kill()
        if self.shop is not None:
            self.shop.close()
            self.shop = None

    def worker(self, concurrency: int = 2, name: str | None = None) -> Worker:
        """Start a worker that the fixture stops at the end of the test."""
        worker = Worker(self, concurrency, name or f"w{len(self.workers) + 1}")
        self.workers.append(worker)
        return worker.start()

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = cli_server.run([LOYALTY, *args], env=self.vars, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"loyalty {' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr.strip()}")
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)


class Worker:
    def __init__(self, env: Env, concurrency: int = 2, name: str = "w1") -> None:
        self.env = env
        self.log = env.tmp / f"worker-{name}.log"
        self.name = name
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as handle:
            self.proc = self._spawn(handle)
        wait_for(lambda: self.proc.poll() is not None or b" ready." in self.log.read_bytes(),
                 60, "the worker to be ready", interval=0.05)
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def _spawn(self, handle: Any) -> subprocess.Popen:
        return subprocess.Popen(
            [LOYALTY, "worker", "--concurrency", str(self.concurrency), "--hostname",
             f"{self.name}-{RUN_ID}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=self.env.vars, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker, pool processes included: no warm shutdown, no acks."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of its own for this run."""
    host, port = urlsplit(RABBITMQ_URL).hostname or "127.0.0.1", urlsplit(RABBITMQ_URL).port
    require(host, port or 5672, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is needed to create a test vhost")
        pytest.skip("rabbitmqctl is not installed")
    vhost = f"loyalty-test-{RUN_ID}"
    rabbitmqctl("add_vhost", vhost)
    user = urlsplit(RABBITMQ_URL).username or "guest"
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield vhost
    rabbitmqctl("delete_vhost", vhost)


def _add_vhost(vhost: str) -> str:
    rabbitmqctl("add_vhost", vhost)
    user = urlsplit(RABBITMQ_URL).username or "guest"
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    return vhost


class Vhosts:
    """New RabbitMQ vhosts for deployments, made a couple ahead and deleted in background
    threads: each is a few rabbitmqctl runs that need not hold a test up."""

    AHEAD = 2

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-vhosts")
        self.ahead: deque[Future[str]] = deque()
        self.deletes: list[Future[str]] = []
        self.made = 0

    def take(self) -> str:
        while len(self.ahead) < self.AHEAD + 1:
            self.made += 1
            self.ahead.append(self.executor.submit(_add_vhost,
                                                   f"loyalty-test-{RUN_ID}-{self.made}"))
        return self.ahead.popleft().result()

    def delete(self, vhost: str) -> None:
        self.deletes = [f for f in self.deletes if not f.done()]
        self.deletes.append(self.executor.submit(rabbitmqctl, "delete_vhost", vhost))

    def close(self) -> None:
        for future in self.deletes:
            future.result()
        for future in self.ahead:
            rabbitmqctl("delete_vhost", future.result())
        self.executor.shutdown()


@pytest.fixture(scope="session")
def vhosts(rabbitmq_vhost: str) -> Iterator[Vhosts]:
    """Needs RabbitMQ up and rabbitmqctl working, as rabbitmq_vhost checks."""
    made = Vhosts()
    yield made
    made.close()


class Broker:
    """Tells whether a broker's queues are empty, acknowledged messages included."""

    def __init__(self, kind: str, url: str, vhost: str | None = None) -> None:
        self.kind, self.url, self.vhost = kind, url, vhost
        self.ctl: Callable[..., str] = rabbitmqctl

    def pending(self) -> int:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            try:
                # Queued, taken by a consumer (its processing lists, worker.redis_reliable)
                # or recorded by kombu's stock transport as unacknowledged.
                held = sum(client.llen(key) for key in client.scan_iter("_loyalty.fetch.*")
                           if client.type(key) == b"list")
                return int(client.llen("loyalty.events") + client.llen("loyalty.admin")
                           + client.hlen("unacked") + held)
            finally:
                client.close()
        if self.kind == "rabbitmq-private":  # a node of its own (tests/e2e/services.py)
            out = self.ctl("list_queues", "--no-table-headers", "name", "messages")
        else:
            out = rabbitmqctl("list_queues", "-p", str(self.vhost), "--no-table-headers",
                              "name", "messages")
        return sum(int(line.split()[1]) for line in out.splitlines() if line.strip())


@pytest.fixture
def deploy(template_db: str, redis_index: int, tmp_path: Path,
           request: pytest.FixtureRequest) -> Iterator[Callable[..., Env]]:
    """Factory of isolated deployments: a fresh database, an emptied Redis database or a
    new RabbitMQ vhost, and extra LOYALTY_* settings (short timeouts for failure tests)."""
    made: list[tuple[str, str | None]] = []
    envs: list[Env] = []
    workers: list[Worker] = []

    def make(broker: str = "redis", **settings: Any) -> Env:
        redis_url = f"redis://{REDIS_HOST}:6379/{redis_index}"
        vhost = None
        if broker == "redis":
            empty_redis(redis_url)
            target = Broker("redis", redis_url)
        else:
            vhosts = request.getfixturevalue("vhosts")
            vhost = vhosts.take()
            target = Broker("rabbitmq", f"{RABBITMQ_URL.rstrip('/')}/{vhost}", vhost)
        url = fresh_database(template_db)
        env = Env(url, target.url, redis_url, tmp_path)
        env.broker = target
        env.vars.update({f"LOYALTY_{k.upper()}": str(v) for k, v in settings.items()})
        env.workers = workers
        made.append((url, vhost))
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
    for url, vhost in made:
        drop_database(url)
        if vhost:
            request.getfixturevalue("vhosts").delete(vhost)


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker_env(request: pytest.FixtureRequest, template_db: str, redis_index: int,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One deployment per broker; every test using it runs once on Redis and once on RabbitMQ."""
    redis_url = f"redis://{REDIS_HOST}:6379/{redis_index}"
    if request.param == "redis":
        empty_redis(redis_url)
        broker = Broker("redis", redis_url)
    else:
        vhost = request.getfixturevalue("vhosts").take()
        broker = Broker("rabbitmq", f"{RABBITMQ_URL.rstrip('/')}/{vhost}", vhost)
    url = fresh_database(template_db)
    env = Env(url, broker.url, redis_url, tmp_path_factory.mktemp(f"e2e-{request.param}"))
    env.broker = broker
    # An order for an unknown contact is dead-lettered after one quick retry, not minutes.
    env.vars.update(LOYALTY_NOT_FOUND_RETRIES="1", LOYALTY_NOT_FOUND_BACKOFF="0.2")
    yield env
    env.close()
    drop_database(url)
    if broker.vhost:
        request.getfixturevalue("vhosts").delete(broker.vhost)


@pytest.fixture(scope="module")
def running_worker(broker_env: Env) -> Iterator[Worker]:
    """The module's worker; killed at the end with its deployment (Env.close), whose
    broker namespace is its own."""
    worker = Worker(broker_env, concurrency=2).start()
    broker_env.workers.append(worker)
    return worker


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """LOYALTY_TEST_REPEAT=N runs each selected test N times in one session (bench/soak.py)."""
    repeat = int(os.environ.get("LOYALTY_TEST_REPEAT", "1"))
    if repeat > 1:
        metafunc.fixturenames.append("soak_run")
        metafunc.parametrize("soak_run", range(repeat), ids=lambda n: f"run{n}")
