"""An example mediagate plugin: counts events and serves ``GET /example/hello``.

Installed as the entry point ``example`` in the ``mediagate.plugins`` group, configured under
``[plugins.example]``. Only public pieces of mediagate are used: the ``hookimpl`` marker and
the hook signatures in :mod:`gateway.hookspecs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from gateway.hookspecs import hookimpl

if TYPE_CHECKING:
    from gateway.events import Event


class ExampleConfig(BaseModel):
    # forbid unknown keys so a typo in [plugins.example] fails at startup, naming the key
    model_config = ConfigDict(extra="forbid")

    greeting: str = "hello"


class ExamplePlugin:
    # mediagate validates [plugins.example] with this model and sets the result as .config
    config_model = ExampleConfig

    def __init__(self) -> None:
        self.config = ExampleConfig()
        self.events_seen = 0
        self.last_event: str | None = None

    @hookimpl
    def mediagate_http_routes(self, app: web.Application, node: Any) -> None:
        # outside /v1/, so the core's auth middleware does not apply: this route is public
        app.router.add_get("/example/hello", self.hello)

    @hookimpl
    def mediagate_event(self, event: Event, node: Any) -> None:
        # called on the event loop for every event: keep it quick, schedule any I/O as a task
        self.events_seen += 1
        self.last_event = event.event

    async def hello(self, request: web.Request) -> web.Response:
        return web.json_response({"greeting": self.config.greeting, "events_seen": self.events_seen,
                                  "last_event": self.last_event})
