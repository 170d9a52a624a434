"""Outgoing events: the relay that takes outbox rows and sends them out two ways.

- `events`: the event envelope and the webhook retry decision (pure);
- `targets`: which webhook URLs are allowed (no loopback, private, link-local or
  metadata addresses unless the operator says so);
- `broker`: publishing to the `loyalty.notifications` topic exchange;
- `sender`: signed webhook requests (Standard Webhooks) over httpx;
- `relay`: the loop that ties them together (`loyalty relay`).
"""
