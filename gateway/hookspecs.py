"""Hook specifications: every call the core makes into plugins, in one place.

A plugin is any object (module or class instance) with ``@hookimpl``-decorated methods whose
names match these specs. Built-in plugins (``plugins/``) and third-party ones are found the
same way, through the ``mediagate.plugins`` entry point group, and may carry a
``config_model`` (a pydantic model) that validates their ``[plugins.<name>]`` config section;
the validated section is set as the plugin's ``config`` attribute before any hook runs.

Hooks that may do I/O can return an awaitable; the core awaits it. Hooks called on hot paths
(``mediagate_event``) must return quickly and schedule their work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.control import ControlCommand
    from gateway.egress import EgressKind
    from gateway.events import Event
    from gateway.ingress import IngressKind
    from gateway.media.layout.templates import LayoutTemplate
    from gateway.node import Node
    from gateway.security import Principal
    from gateway.storage import StorageBackend

hookspec = pluggy.HookspecMarker("mediagate")
hookimpl = pluggy.HookimplMarker("mediagate")


# -------------------------------------------------------------------------------------------
# Initialization and shutdown
# -------------------------------------------------------------------------------------------

@hookspec
def mediagate_configure(node: Node) -> None:
    """Called once after every plugin is loaded and the configuration validated, before the
    store opens and before any other hook. Plugins read ``self.config`` and keep ``node``."""


@hookspec
def mediagate_startup(node: Node) -> Any:
    """Called when the node has its store, services and HTTP app, before it serves requests.
    May return an awaitable (start background tasks, open sessions)."""


@hookspec
def mediagate_shutdown(node: Node) -> Any:
    """Called once when the node stops, in reverse registration order. May return an
    awaitable; must release sockets, threads and files."""


# -------------------------------------------------------------------------------------------
# HTTP
# -------------------------------------------------------------------------------------------

@hookspec
def mediagate_http_routes(app: web.Application, node: Node) -> None:
    """Add routes to the aiohttp application. Paths under ``/v1/`` pass the core's auth
    middleware (``request[gateway.api.PRINCIPAL]`` is set); other paths are the plugin's to protect.
    Called before the app is frozen."""


# -------------------------------------------------------------------------------------------
# Events
# -------------------------------------------------------------------------------------------

@hookspec
def mediagate_event(event: Event, node: Node) -> None:
    """Called for every event on the node's bus (room.created, participant.joined, ...), on
    the event loop, in emission order. Must not block: schedule I/O as a task."""


@hookspec(firstresult=True)
def mediagate_task_callback(url: str, event: Event, node: Node) -> bool | None:
    """Deliver `event` to a task's own ``callback_url`` (egress, ingress, SIP call). Return
    True when queued for delivery; None leaves it to the next plugin. Must not block."""


# -------------------------------------------------------------------------------------------
# Media edges: what a plugin adds to the node
# -------------------------------------------------------------------------------------------

@hookspec
def mediagate_ingress_kinds(node: Node) -> list[IngressKind]:
    """Return the ingress kinds this plugin provides (``whip``, ``rtmp``, ``url``, ``test``).
    A kind named by two plugins is a startup error."""


@hookspec
def mediagate_egress_kinds(node: Node) -> list[EgressKind]:
    """Return the egress kinds this plugin provides (``rtmp``, ``record``)."""


@hookspec
def mediagate_storage_backends(node: Node) -> list[StorageBackend]:
    """Return storage backends (``local``, ``s3``, ``cos``, ``qiniu``) that recordings and
    uploads can be written to."""


@hookspec
def mediagate_layout_templates() -> dict[str, LayoutTemplate]:
    """Return layout templates by name. A template turns the list of video sources of a
    room into regions on a canvas; see :mod:`gateway.media.layout.templates`."""


# -------------------------------------------------------------------------------------------
# Control and policy
# -------------------------------------------------------------------------------------------

@hookspec
def mediagate_control_commands(node: Node) -> list[ControlCommand]:
    """Return extra room control commands (the WebSocket's ``setstate``-style commands).
    A plugin command replaces a built-in one of the same name."""


@hookspec(firstresult=True)
def mediagate_authorize(principal: Principal, action: str, room_id: str | None, node: Node) -> bool | None:
    """Decide whether `principal` may perform `action` (``room.create``, ``room.update``,
    ``participant.kick``, ...) on `room_id`. Return True or False to decide, None to leave the
    decision to the next plugin and finally to the core's permission bits."""


@hookspec(firstresult=True)
def mediagate_sip_route(request: dict[str, Any], node: Node) -> dict[str, Any] | None:
    """Route an inbound SIP call: given the request (``to``, ``from``, ``gate``, headers),
    return ``{"room_id": ..., "pin": ...}`` or ``{"reject": status}``; None passes."""
