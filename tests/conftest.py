"""Shared fixtures: a node on a temporary data dir, an HTTP client for it, and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import load_config
from gateway.node import Node

ACCESS_KEY = "test_access"
SECRET_KEY = "test_secret_value"


@pytest.fixture
def make_config(tmp_path: Any) -> Callable[..., Any]:
    def make(*overrides: str, **kwargs: Any):
        base = [f'node.data_dir="{tmp_path / "data"}"', "http.port=0", "log.level=\"warning\"",
                f'auth.api_keys={{"{ACCESS_KEY}" = "{SECRET_KEY}"}}', "auth.bootstrap_key=false",
                # never the shared 1935 / 5060 of a gateway already running here
                "plugins.rtmp.port=0", 'plugins.rtmp.host="127.0.0.1"',
                "plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0"]
        return load_config(None, overrides=[*base, *overrides], environ={}, **kwargs)
    return make


@pytest.fixture
async def make_node(make_config: Callable[..., Any]) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    nodes: list[Node] = []

    async def make(*overrides: str, extra_plugins: dict[str, Any] | None = None) -> Node:
        node = Node(make_config(*overrides), extra_plugins=extra_plugins)
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.stop()


@pytest.fixture
async def node(make_node: Callable[..., Awaitable[Node]]) -> Node:
    return await make_node()


@pytest.fixture
async def client(node: Node) -> AsyncIterator[TestClient]:
    assert node.app is not None
    async with TestClient(TestServer(node.app)) as test_client:
        node.url = str(test_client.make_url("")).rstrip("/")  # URLs in answers point at this server
        yield test_client


@pytest.fixture
async def token(client: TestClient) -> str:
    response = await client.post("/v1/auth/token", json={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
    assert response.status == 200, await response.text()
    return (await response.json())["token"]


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
