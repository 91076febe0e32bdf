"""The webhook plugin loads through its entry point and validates ``[plugins.webhook]``."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.pluginmanager import PluginManager
from plugins.webhook import WebhookConfig, WebhookPlugin

ONLY = 'plugins.only=["webhook"]'


def load(*overrides: str) -> PluginManager:
    config = load_config(None, overrides=[*overrides, ONLY], environ={})
    pm = PluginManager()
    pm.load(config)
    return pm


def test_loads_with_config_section() -> None:
    pm = load('plugins.webhook.urls=["http://127.0.0.1:1/x"]', 'plugins.webhook.events=["room.*"]')
    assert pm.plugin_names() == ["webhook"]
    info = pm.infos["webhook"]
    assert info.origin == "plugins.webhook:WebhookPlugin"
    plugin = info.plugin
    assert isinstance(plugin, WebhookPlugin) and pm.get_plugin("webhook") is plugin
    assert isinstance(plugin.config, WebhookConfig)
    assert plugin.config.urls == ["http://127.0.0.1:1/x"]
    assert plugin.config.events == ["room.*"]
    assert (plugin.config.timeout_s, plugin.config.retry_interval_s, plugin.config.give_up_after_s) == (5, 10, 60)
    assert plugin.config.key == "" and plugin.config.max_queue == 10000


def test_defaults_leave_plugin_idle() -> None:
    plugin = load().infos["webhook"].plugin
    assert plugin.config.urls == [] and plugin.config.events == ["*"]


def test_hooks_are_registered() -> None:
    pm = load('plugins.webhook.urls=["http://127.0.0.1:1/x"]')
    for hook in ("mediagate_configure", "mediagate_startup", "mediagate_shutdown", "mediagate_event"):
        assert [impl.plugin_name for impl in getattr(pm.hook, hook).get_hookimpls()] == ["webhook"]


def test_unknown_key_names_it() -> None:
    with pytest.raises(ConfigError) as info:
        load("plugins.webhook.url=\"http://x\"")
    assert info.value.key == "plugins.webhook.url"
    assert "plugins.webhook.url" in str(info.value) and "unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ('plugins.webhook.urls=["ftp://example.com/x"]', "plugins.webhook.urls.0"),
        ('plugins.webhook.urls=["http://ok/x", "not a url"]', "plugins.webhook.urls.1"),
        ("plugins.webhook.timeout_s=0", "plugins.webhook.timeout_s"),
        ("plugins.webhook.max_queue=0", "plugins.webhook.max_queue"),
        ("plugins.webhook.retry_interval_s=-1", "plugins.webhook.retry_interval_s"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(override)
    assert info.value.key == key


def test_key_not_in_config_repr() -> None:
    plugin = load('plugins.webhook.key="hunter2"').infos["webhook"].plugin
    assert plugin.config.key == "hunter2"
    assert "hunter2" not in repr(plugin.config)
