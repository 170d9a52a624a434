"""The transport kombu loads (`worker.redis_reliable:Transport`): the reliable channel,
the fetched messages' records, and a heartbeat timer on the worker's event loop."""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

from worker.redis_reliable.channel import Channel

log = logging.getLogger("loyalty.broker")


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: delivery tag -> (processing list, the message's exact bytes), for its ack.
        self.fetched: dict[Any, list[tuple[str, bytes]]] = {}

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        cycle: Any = self.cycle
        old = getattr(cycle, "_loyalty_heartbeat_tref", None)
        if old is not None:
            old.cancel()
        timeout = connection.client.transport_options.get(
            "visibility_timeout", Channel.visibility_timeout)
        period = max(1.0, min(10.0, max(2, int(timeout)) / 4))
        cycle._loyalty_heartbeat_tref = loop.call_repeatedly(period, self._heartbeat)

    def _heartbeat(self) -> None:
        cycle: Any = self.cycle
        for channel in list(cycle._channels):
            if isinstance(channel, Channel) and channel._alive_at is not None:
                try:
                    channel.keep_alive(force=True)
                except Exception as exc:  # Redis away: the next beat, or the reconnection
                    log.warning("heartbeat not sent", extra={"error": str(exc)})
