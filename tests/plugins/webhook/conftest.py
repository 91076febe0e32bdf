"""Helpers for webhook tests: a fake clock, a scripted receiving server, a started plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from gateway.events import EventBus
from plugins.webhook import WebhookConfig, WebhookPlugin

START = 1000.0


class FakeClock:
    """Time moves only when the code under test sleeps, so attempt times are exact."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.paused = False  # when set, sleeps never return: parks deliveries in their retry wait
        self._never = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if self.paused:
            await self._never.wait()
        self.now += delay
        await asyncio.sleep(0)


@dataclass
class Received:
    t: float  # fake-clock seconds since START when the request arrived
    body: bytes
    headers: CIMultiDictProxy[str]
    status: int


@dataclass
class Receiver:
    """A webhook endpoint answering from `script` (a status, or "hang"), then `default`."""

    clock: FakeClock
    script: list[int | str] = field(default_factory=list)
    default: int | str = 200
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    @property
    def times(self) -> list[float]:
        return [r.t for r in self.requests]

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        action = self.script.pop(0) if self.script else self.default
        status = 200 if action == "hang" else int(action)
        self.requests.append(Received(self.clock.now - START, await request.read(), request.headers, status))
        if action == "hang":
            await self.release.wait()
        return web.json_response({"code": 0}, status=status)

    async def wait_accepted(self, count: int) -> None:
        async def poll() -> None:
            while len(self.accepted) < count:
                await asyncio.sleep(0.005)
        await asyncio.wait_for(poll(), 10)  # guard against a hang, not a speed check


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_receiver(aiohttp_server: Any, clock: FakeClock) -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    made: list[Receiver] = []

    async def make(script: list[int | str] | None = None, default: int | str = 200) -> Receiver:
        receiver = Receiver(clock, list(script or []), default)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = await aiohttp_server(app)
        receiver.url = str(server.make_url("/hook"))
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:  # let hanging handlers finish so the servers close promptly
        receiver.release.set()


@pytest.fixture
async def make_plugin(clock: FakeClock) -> AsyncIterator[Callable[..., Awaitable[WebhookPlugin]]]:
    made: list[WebhookPlugin] = []

    async def make(start: bool = True, **config: Any) -> WebhookPlugin:
        plugin = WebhookPlugin(clock=clock, sleep=clock.sleep)
        plugin.config = WebhookConfig(**config)
        node = SimpleNamespace(events=EventBus(), config=None)
        plugin.mediagate_configure(node)
        if start:
            await plugin.mediagate_startup(node)
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        await plugin.mediagate_shutdown(plugin.node)
