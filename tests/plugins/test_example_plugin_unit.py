"""The example third-party plugin (contrib/mediagate-example-plugin), imported from its source tree."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.events import Event, EventBus
from gateway.pluginmanager import PluginManager

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "contrib" / "mediagate-example-plugin"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(PACKAGE_ROOT))
    return importlib.import_module("mediagate_example")


@pytest.fixture
def node() -> Any:
    return SimpleNamespace(events=EventBus(), config=None)


async def client_for(plugin: Any, node: Any, aiohttp_client: Any) -> Any:
    app = web.Application()
    plugin.mediagate_http_routes(app, node)
    return await aiohttp_client(app)


async def test_hello_before_any_event(example: ModuleType, node: Any, aiohttp_client: Any) -> None:
    client = await client_for(example.ExamplePlugin(), node, aiohttp_client)
    resp = await client.get("/example/hello")
    assert resp.status == 200
    assert await resp.json() == {"greeting": "hello", "events_seen": 0, "last_event": None}


async def test_hello_counts_events_and_uses_config(example: ModuleType, node: Any, aiohttp_client: Any) -> None:
    plugin = example.ExamplePlugin()
    plugin.config = example.ExampleConfig.model_validate({"greeting": "bonjour"})
    client = await client_for(plugin, node, aiohttp_client)
    for name in ("room.created", "participant.joined", "participant.left"):
        plugin.mediagate_event(Event(name, "r1", {}), node)

    resp = await client.get("/example/hello")
    assert await resp.json() == {"greeting": "bonjour", "events_seen": 3, "last_event": "participant.left"}


async def test_only_get_is_routed(example: ModuleType, node: Any, aiohttp_client: Any) -> None:
    client = await client_for(example.ExamplePlugin(), node, aiohttp_client)
    assert (await client.post("/example/hello")).status == 405


def test_config_forbids_unknown_keys(example: ModuleType) -> None:
    with pytest.raises(ValidationError):
        example.ExampleConfig.model_validate({"greting": "hi"})


def test_hook_signatures_match_the_specs(example: ModuleType) -> None:
    # pluggy validates hook names and argument names against gateway.hookspecs on register
    pm = PluginManager()
    plugin = example.ExamplePlugin()
    pm.register(plugin, name="example")
    assert pm.hook.mediagate_http_routes.get_hookimpls()[0].plugin is plugin
    assert pm.hook.mediagate_event.get_hookimpls()[0].plugin is plugin


def test_entry_point_declared() -> None:
    text = (PACKAGE_ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."mediagate.plugins"]' in text
    assert 'example = "mediagate_example:ExamplePlugin"' in text
