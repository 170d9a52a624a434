"""Remote control: off by default, so a producer's broadcast `shutdown` stops no worker.

Finding 2 of issue 7: an unsigned broadcast `shutdown` stopped the worker. Here a plain
Celery client (a shop) sends it on both brokers and the worker keeps applying events. With
LOYALTY_REMOTE_CONTROL the worker refuses to start unless messages are signed, and then an
unsigned broadcast is refused while a signed one is obeyed (which also shows the broadcast
these tests send is one a listening worker acts on).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import Env, rabbitmqctl, wait_for
from tests.e2e.streams import TS, balances, shop, sql
from tests.e2e.test_failures import FAST
from tests.e2e.test_signing import make_identity, signed

pytestmark = pytest.mark.e2e


def pidbox_listeners(env: Env) -> int:
    """Consumers of Celery's control exchange (`celery.pidbox`) on the deployment's broker."""
    if env.broker.kind == "redis":
        # kombu listens to a fanout exchange with PSUBSCRIBE, which Redis cannot list by
        # pattern; count the subscribed connections of this deployment's database instead.
        client = redis.Redis.from_url(env.broker_url)
        try:
            db = str(client.connection_pool.connection_kwargs["db"])
            return sum(1 for c in client.client_list()
                       if str(c.get("db")) == db and int(c.get("psub", 0)) > 0)
        finally:
            client.close()
    out = rabbitmqctl("list_queues", "-p", env.broker.vhost, "--no-table-headers",
                      "name", "consumers")
    return sum(int(line.split()[1]) for line in out.splitlines()
               if line.strip() and line.split()[0].endswith(".celery.pidbox"))


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_broadcast_shutdown_from_a_producer_stops_nothing(deploy, broker: str) -> None:
    env: Env = deploy(broker, **FAST)
    worker = env.worker()
    assert pidbox_listeners(env) == 0

    client = shop(env)
    client.control.shutdown()
    client.control.broadcast("shutdown")
    # No time to wait out: nothing consumes the broadcast (no listener, above), and the
    # worker's one consumer loop would have taken it before this later signup's message.
    client.send_task("loyalty.events.signup", args=[{
        "event_id": f"after-shutdown-{broker}", "contact_id": "still-here", "occurred_at": TS}],
        queue="loyalty.events")
    wait_for(lambda: balances(env).get("still-here") == 100, 30, "the signup after the broadcast")

    assert worker.alive(), worker.log.read_text()[-2000:]
    assert not any("shutdown" in str(line.get("message", "")).lower()
                   for line in worker.logs())


def test_remote_control_needs_signing(deploy) -> None:
    env: Env = deploy("redis", remote_control="true")
    done = env.cli("worker", "--concurrency", "1", check=False, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: LOYALTY_REMOTE_CONTROL needs message signing: set LOYALTY_SECURITY_KEY, "
        "LOYALTY_SECURITY_CERTIFICATE and LOYALTY_SECURITY_CERT_STORE, or turn remote "
        "control off"]


SIGNED_SHUTDOWN = """
import sys
from celery import Celery
app = Celery(broker=sys.argv[1], set_as_current=False)
app.conf.update(task_serializer="auth", accept_content=["auth"])
app.setup_security(allowed_serializers=["json"], key=sys.argv[2], cert=sys.argv[3],
                   store=sys.argv[4], digest="sha256", serializer="json")
app.control.shutdown()
"""


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_remote_control_on_obeys_only_signed_broadcasts(deploy, tmp_path: Path,
                                                        broker: str) -> None:
    env: Env = deploy(broker, **FAST)
    store = tmp_path / "trusted"
    key, cert = make_identity(tmp_path / "ops", "ops")
    store.mkdir()
    (store / "ops.pem").write_bytes(cert.read_bytes())
    env.vars = {**signed(env, key, cert, store), "LOYALTY_REMOTE_CONTROL": "true"}
    worker = env.worker()
    wait_for(lambda: pidbox_listeners(env) == 1, 30, "the worker's control consumer")

    shop(env).control.shutdown()  # plain JSON, as any producer could send
    # The worker takes it and refuses it: kept as a letter, not obeyed.
    wait_for(lambda: sql(env, "SELECT reason FROM dead_letters") == [("content_disallowed",)],
             30, "the unsigned broadcast refused")
    assert worker.alive(), worker.log.read_text()[-2000:]
    env.cli("publish", "signup", "--contact-id", "signed-after-broadcast")
    wait_for(lambda: balances(env).get("signed-after-broadcast") == 100, 30, "the signed signup")

    subprocess.run([sys.executable, "-c", SIGNED_SHUTDOWN, env.broker_url, str(key), str(cert),
                    str(store)], check=True, timeout=60)
    wait_for(lambda: not worker.alive(), 30, "the signed shutdown to stop the worker")
