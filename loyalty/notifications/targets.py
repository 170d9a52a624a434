"""Which webhook URLs the service may call.

A webhook URL is chosen by whoever may run `loyalty webhooks add`; without a check it
could point the service at itself, at the database's port, or at the cloud metadata
endpoint (169.254.169.254). Every address the host name resolves to must be public,
when the subscription is added and again before each request (a name may be re-pointed
after it was checked). `LOYALTY_WEBHOOK_ALLOW_PRIVATE` lifts the check, for tests and
for receivers on a private network.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from loyalty.errors import InvalidPayload

#: Cloud metadata endpoints that are not caught as link-local or private.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class TargetRefused(InvalidPayload):
    reason = "webhook_target_refused"


def refused_address(address: str) -> str | None:
    """Why `address` may not be called, or None if it is a public address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for label, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                        ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return f"{label} address {ip}"
    return None


def check_url(url: str, allow_private: bool) -> str:
    """The URL if it may be called; raises TargetRefused (a usage error) if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"webhook URL must be http:// or https:// with a host: {url!r}")
    if parts.username or parts.password:
        raise TargetRefused("webhook URL must not carry credentials")
    if len(url) > 2048:
        raise TargetRefused("webhook URL is longer than 2048 characters")
    if allow_private:
        return url
    host = parts.hostname.rstrip(".").lower()
    if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise TargetRefused(f"webhook host {host!r} is not allowed "
                            "(LOYALTY_WEBHOOK_ALLOW_PRIVATE lifts this)")
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"webhook host {host!r} does not resolve: {exc}") from None
    for info in infos:
        why = refused_address(str(info[4][0]))
        if why:
            raise TargetRefused(f"webhook host {host!r} resolves to a {why} "
                                "(LOYALTY_WEBHOOK_ALLOW_PRIVATE lifts this)")
    return url
