"""Helpers for the REST and WebSocket API tests: rooms, test participants, join tokens, sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from gateway.events import Event
from gateway.node import Node

WAIT_S = 20.0  # upper bound for anything awaited; generous for a shared, noisy machine


class Api:
    """Helpers bound to the test client and the operator's auth headers (the `api` fixture)."""

    def __init__(self, client: TestClient, auth: dict[str, str]) -> None:
        self.client = client
        self.auth = auth

    async def create_room(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/v1/rooms", json=body, headers=self.auth)
        assert response.status == 201, await response.text()
        return await response.json()

    async def room(self, room_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/rooms/{room_id}", headers=self.auth)
        assert response.status == 200, await response.text()
        return await response.json()

    async def room_exists(self, room_id: str) -> bool:
        response = await self.client.get(f"/v1/rooms/{room_id}", headers=self.auth)
        assert response.status in (200, 404), await response.text()
        return response.status == 200

    async def layout(self, room_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/rooms/{room_id}/layout", headers=self.auth)
        assert response.status == 200, await response.text()
        return await response.json()

    async def add_test_participant(self, room_id: str, identity: str, **extra: Any) -> dict[str, Any]:
        body = {"kind": "test", "identity": identity, "pattern": {"color": "FF0000", "tone_hz": 440}, **extra}
        response = await self.client.post(f"/v1/rooms/{room_id}/ingress", json=body, headers=self.auth)
        assert response.status == 201, await response.text()
        return await response.json()

    async def join_token(self, room_id: str, identity: str, **extra: Any) -> str:
        response = await self.client.post(f"/v1/rooms/{room_id}/join-tokens",
                                          json={"identity": identity, **extra}, headers=self.auth)
        assert response.status == 201, await response.text()
        return (await response.json())["token"]

    async def participants(self, room_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/rooms/{room_id}/participants", headers=self.auth)
        assert response.status == 200, await response.text()
        return await response.json()

    async def participant(self, room_id: str, participant_id: str) -> dict[str, Any]:
        found = [p for p in await self.participants(room_id) if p["participant_id"] == participant_id]
        assert len(found) == 1, found
        return found[0]

    @staticmethod
    def error_of(body: dict[str, Any]) -> tuple[str, str | None]:
        """(code, field) of an error body, asserting its documented shape."""
        assert set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error["message"], str) and error["message"]
        return error["code"], error["field"]

    async def expect_error(self, response: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
        text = await response.text()
        assert response.status == status, text
        body = json.loads(text)
        assert self.error_of(body) == (code, field), body
        return body

    @staticmethod
    async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
        """Poll until `check()` is true; fail only when it never becomes true (no timing assertion)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never happened: {what}")


@pytest.fixture
def api(client: TestClient, auth: dict[str, str]) -> Api:
    return Api(client, auth)


class Socket:
    """A room WebSocket with helpers that read messages until the wanted one arrives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []  # every message received, in order
        self.backlog: list[dict[str, Any]] = []  # received but not yet returned by until()

    async def send(self, message: str | dict[str, Any]) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message, ensure_ascii=False))

    async def next(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.receive(), WAIT_S)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            raise ConnectionError(f"socket closed: {message.data} {message.extra}")
        assert message.type == WSMsgType.TEXT, message
        data = json.loads(message.data)
        self.seen.append(data)
        return data

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first message not returned before that matches, waiting for it if needed."""
        for index, data in enumerate(self.backlog):
            if predicate(data):
                return self.backlog.pop(index)
        while True:
            data = await self.next()
            if predicate(data):
                return data
            self.backlog.append(data)

    async def reply(self) -> dict[str, Any]:
        """The next command reply (result or error), skipping events."""
        return await self.until(lambda m: m["type"] in ("result", "error"))

    async def command(self, message: str | dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        return await self.reply()

    async def ok(self, message: str | dict[str, Any]) -> dict[str, Any]:
        reply = await self.command(message)
        assert reply["type"] == "result" and reply["ok"] is True, reply
        return reply

    async def event(self, name: str, **data: Any) -> dict[str, Any]:
        return await self.until(lambda m: m["type"] == "event" and m["event"] == name and all(
            m["data"].get(k) == v for k, v in data.items()))

    async def closed(self) -> tuple[list[dict[str, Any]], int | None]:
        """Read until the server closes; returns the messages read and the close code."""
        messages = []
        while True:
            message = await asyncio.wait_for(self.ws.receive(), WAIT_S)
            if message.type == WSMsgType.TEXT:
                messages.append(json.loads(message.data))
                continue
            assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), message
            # the close frame's own code (the client's close_code may read 1006 once the server hangs up)
            return messages, message.data if message.type == WSMsgType.CLOSE else self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def connect(client: TestClient) -> AsyncIterator[Callable[..., Awaitable[Socket]]]:
    """Open a room WebSocket with a token (query parameter by default) and read its welcome."""
    opened: list[Socket] = []

    async def open_socket(room_id: str, token: str, *, header: bool = False, welcome: bool = True) -> Socket:
        path = f"/v1/rooms/{room_id}/ws"
        if header:
            ws = await client.ws_connect(path, headers={"Authorization": f"Bearer {token}"})
        else:
            ws = await client.ws_connect(path, params={"access_token": token})
        socket = Socket(ws)
        opened.append(socket)
        if welcome:
            first = await socket.next()
            assert first["type"] == "welcome", first
        return socket

    yield open_socket
    for socket in opened:
        if not socket.ws.closed:
            await socket.ws.close()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[Node], Awaitable[TestClient]]]:
    """An HTTP test client for a node made with make_node (for nodes with special settings)."""
    clients: list[TestClient] = []

    async def make(node: Node) -> TestClient:
        assert node.app is not None
        test_client = TestClient(TestServer(node.app))
        await test_client.start_server()
        node.url = str(test_client.make_url("")).rstrip("/")
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        await test_client.close()


class EventLog:
    """Every event the node emits for one room, read straight from the event bus."""

    def __init__(self, node: Node, room_id: str | None) -> None:
        self.subscription = node.events.subscribe(room_id, maxsize=10000)
        self.events: list[Event] = []

    def drain(self) -> list[Event]:
        while not self.subscription.queue.empty():
            self.events.append(self.subscription.queue.get_nowait())
        return self.events

    def named(self, name: str) -> list[Event]:
        return [e for e in self.drain() if e.event == name]

    def close(self) -> None:
        self.subscription.close()


@pytest.fixture
def event_log(node: Node) -> Any:
    logs: list[EventLog] = []

    def make(room_id: str | None = None) -> EventLog:
        log = EventLog(node, room_id)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()
