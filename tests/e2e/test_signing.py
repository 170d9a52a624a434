"""Optional message signing: signed messages apply, unsigned or forged ones are kept, not run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import Env, wait_for
from tests.e2e.streams import TS, balances, letters_by_message, shop
from tests.e2e.test_failures import FAST

pytestmark = pytest.mark.e2e


def make_identity(folder: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def signed(env: Env, key: Path, cert: Path, store: Path) -> dict[str, str]:
    return {**env.vars, "LOYALTY_SECURITY_KEY": str(key),
            "LOYALTY_SECURITY_CERTIFICATE": str(cert),
            "LOYALTY_SECURITY_CERT_STORE": str(store)}


def test_signed_messages_only(deploy, tmp_path: Path) -> None:
    env: Env = deploy("redis", **FAST)
    store = tmp_path / "trusted"
    key, cert = make_identity(tmp_path / "shop", "shop")
    store.mkdir()
    (store / "shop.pem").write_bytes(cert.read_bytes())
    env.vars = signed(env, key, cert, store)
    env.worker()

    env.cli("publish", "signup", "--contact-id", "signed-1")
    wait_for(lambda: balances(env).get("signed-1") == 100, 30, "the signed signup")
    adjusted = env.cli_json("adjust", "--contact-id", "signed-1", "--amount", "5",
                            "--description", "signed", "--actor", "ops")
    assert adjusted["status"] == "applied"

    unsigned = shop(env).send_task("loyalty.events.signup", args=[{
        "event_id": "plain", "contact_id": "plain-1", "occurred_at": TS}],
        queue="loyalty.events").id
    forger_key, forger_cert = make_identity(tmp_path / "forger", "forger")
    forger = Env(env.db_url, env.broker_url, env.result_backend, tmp_path)
    forger.vars = signed(forger, forger_key, forger_cert, store)
    forged = json.loads(forger.cli("publish", "signup", "--contact-id", "forged-1",
                                   "--json").stdout)["message_id"]
    wait_for(lambda: {unsigned, forged} <= set(letters_by_message(env)), 30, "the dead letters")
    letters = letters_by_message(env)
    assert letters[unsigned] == "content_disallowed"
    assert letters[forged] == "signature_invalid"
    assert set(balances(env)) == {"signed-1"}
    # Finding 3 of issue 7: an unsigned staff action, kept as content_disallowed, must not
    # be applied by a replay, whatever the selection.
    grant = shop(env).send_task("loyalty.accounts.adjust_points", args=[{
        "request_id": "unsigned-grant", "contact_id": "signed-1", "balance": 999_999_999,
        "description": "free points", "actor": "nobody"}], queue="loyalty.admin").id
    wait_for(lambda: grant in letters_by_message(env), 30, "the unsigned adjustment's letter")
    assert letters_by_message(env)[grant] == "content_disallowed"
    for selection in (["--reason", "content_disallowed"], ["--all"], ["--since", "1h"]):
        report = env.cli_json("dlq", "replay", *selection)
        assert report["items"] == [], selection
    assert balances(env) == {"signed-1": 105}
