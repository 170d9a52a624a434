"""Optional Celery message signing, shared by the worker and the producer helper.

With signing on, every task message is wrapped by Celery's "auth" serializer: a
JSON body signed with the sender's private key. The worker accepts only messages
whose certificate is in its trusted store; anything else (plain JSON included)
is refused before it is read and lands in the dead-letter table.
"""

from __future__ import annotations

from celery import Celery

from loyalty.errors import SettingsError


def enable_signing(app: Celery, *, key: str, certificate: str, cert_store: str) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SettingsError(
            "message signing needs the cryptography package: pip install 'loyalty-ledger[signing]'"
        ) from None
    app.conf.update(task_serializer="auth", accept_content=["auth"], result_serializer="json",
                    result_accept_content=["json"])
    try:
        app.setup_security(allowed_serializers=["json"], key=key, cert=certificate,
                           store=cert_store, digest="sha256", serializer="json")
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot load the signing key or certificates: {exc}") from None
