"""Finding, configuring and registering plugins (pluggy), the way pytest does it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from gateway import hookspecs
from gateway.config import Config
from gateway.errors import ConfigError

ENTRY_POINT_GROUP = "mediagate.plugins"


@dataclass
class PluginInfo:
    name: str
    plugin: Any
    origin: str  # "entry point module:attr" or "direct"
    distribution: str | None


def discover_entry_points() -> list[EntryPoint]:
    """Every plugin entry point installed, sorted by name for a stable load order."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def instantiate(target: Any) -> Any:
    """Entry points may name a module, a class (instantiated with no arguments) or an object."""
    return target() if inspect.isclass(target) else target


def configure_plugin(name: str, plugin: Any, config: Config) -> None:
    """Validate ``[plugins.<name>]`` against the plugin's ``config_model`` and set ``.config``."""
    section = config.plugins.section(name)
    model: type[BaseModel] | None = getattr(plugin, "config_model", None)
    if model is None:
        if section:
            key = f"plugins.{name}.{next(iter(section))}"
            raise config.error(f"plugin {name!r} takes no configuration", key)
        return
    try:
        plugin.config = model.model_validate(section)
    except ValidationError as exc:
        raise config.validation_error(exc, ("plugins", name)) from exc
    _resolve_plugin_paths(name, plugin.config, config)


def _resolve_plugin_paths(name: str, settings: BaseModel, config: Config) -> None:
    """A relative ``Path`` field written in the config file is relative to that file, as
    ``node.data_dir`` is, not to wherever the node happens to be started from."""
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        base = config.file_base(f"plugins.{name}.{field}")
        if base is None:
            continue
        if isinstance(value, Path) and not value.expanduser().is_absolute():
            setattr(settings, field, (base / value).resolve())
        elif isinstance(value, list) and all(isinstance(item, Path) for item in value):
            setattr(settings, field, [item if item.expanduser().is_absolute()
                                      else (base / item).resolve() for item in value])


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus mediagate's loading rules (disable lists, config sections)."""

    def __init__(self) -> None:
        super().__init__("mediagate")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def load(self, config: Config, extra: dict[str, Any] | None = None) -> None:
        """Load entry-point plugins allowed by the config, then `extra` (name -> plugin)."""
        disabled = set(config.plugins.disabled)
        only = set(config.plugins.only) if config.plugins.only is not None else None
        candidates: list[tuple[str, Any, str, str | None]] = []
        for ep in discover_entry_points():
            if ep.name in disabled or (only is not None and ep.name not in only):
                continue
            try:
                target = ep.load()
            except Exception as exc:  # a broken third-party plugin must be named, not hidden
                raise ConfigError(f"cannot load plugin {ep.name!r} ({ep.value}): {exc}",
                                  key=f"plugins.{ep.name}") from exc
            dist = ep.dist.name if ep.dist else None
            candidates.append((ep.name, target, ep.value, dist))
        for name, target in (extra or {}).items():
            candidates.append((name, target, "direct", None))
        known = {name for name, *_ in candidates} | disabled
        for name in config.plugins.section_names():
            if name not in known:
                raise config.error(f"no plugin named {name!r} is installed", f"plugins.{name}")
        for name, target, origin, dist in candidates:
            if name in self.infos:
                raise ConfigError(f"two plugins are named {name!r}", key=f"plugins.{name}")
            plugin = instantiate(target)
            configure_plugin(name, plugin, config)
            self.register(plugin, name=name)
            self.infos[name] = PluginInfo(name, plugin, origin, dist)

    def plugin_names(self) -> list[str]:
        return list(self.infos)
