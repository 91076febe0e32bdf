"""Built-in webhook plugin: POST every matching event, signed, to the configured URLs.

Configured under ``[plugins.webhook]`` (see :class:`WebhookConfig`). Each event is sent as its
exact ``Event.to_json()`` bytes with ``X-Mediagate-Signature`` (when ``key`` is set),
``X-Mediagate-Event`` and ``X-Mediagate-Delivery`` headers; failures are retried per seed 001
§9 (see :mod:`plugins.webhook.delivery`). Other plugins (egress, ingress tasks) post to their
own callback URLs through :meth:`WebhookPlugin.deliver`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from typing import Any

from gateway.events import Event
from gateway.hookspecs import hookimpl
from plugins.webhook.config import WebhookConfig, check_url
from plugins.webhook.delivery import Clock, RetryPolicy, Sleep, WebhookSender
from plugins.webhook.signing import sign, verify

__all__ = ["WebhookConfig", "WebhookPlugin", "sign", "verify"]


class WebhookPlugin:
    config_model = WebhookConfig

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.config = WebhookConfig()
        self.node: Any = None
        self._clock = clock
        self._sleep = sleep
        self._sender: WebhookSender | None = None

    @property
    def sender(self) -> WebhookSender:
        # built lazily so it sees the validated config the plugin manager set after __init__
        if self._sender is None:
            cfg = self.config
            policy = RetryPolicy(cfg.timeout_s, cfg.retry_interval_s, cfg.give_up_after_s)
            self._sender = WebhookSender(policy, cfg.max_queue, clock=self._clock, sleep=self._sleep)
        return self._sender

    def wants(self, event_name: str) -> bool:
        return any(fnmatch.fnmatchcase(event_name, pattern) for pattern in self.config.events)

    # --- public API for other plugins -------------------------------------------------------

    def deliver(self, url: str, event: Event, key: str | None = None) -> None:
        """Queue `event` for `url` with the same retries as configured webhooks.

        `key` signs the body; None uses the configured ``key``, "" sends it unsigned. The
        ``events`` filter does not apply: the caller chose this event. Thread-safe.
        """
        check_url(url)
        self.sender.submit(url, event, event.to_json().encode(), self.config.key if key is None else key)

    async def join(self) -> None:
        """Wait until every queued delivery has succeeded or been given up."""
        await self.sender.join()

    # --- hooks ------------------------------------------------------------------------------

    @hookimpl
    def mediagate_configure(self, node: Any) -> None:
        self.node = node

    @hookimpl
    async def mediagate_startup(self, node: Any) -> None:
        await self.sender.start()

    @hookimpl
    async def mediagate_shutdown(self, node: Any) -> None:
        await self.sender.close()

    @hookimpl
    def mediagate_task_callback(self, url: str, event: Event, node: Any) -> bool:
        self.deliver(url, event)
        return True

    @hookimpl
    def mediagate_event(self, event: Event, node: Any) -> None:
        if not self.config.urls or not self.wants(event.event):
            return
        body = event.to_json().encode()  # serialised once, the same bytes to every URL
        for url in self.config.urls:
            self.sender.submit(url, event, body, self.config.key)
