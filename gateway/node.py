"""The node: one process that owns the config, plugins, store, services and HTTP app.

Start order: plugins load (config validated) -> ``mediagate_configure`` -> store opens and
migrates -> services -> HTTP app with core and plugin routes -> ``mediagate_startup`` ->
ready. Stop runs the reverse.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway import __version__
from gateway.config import Config
from gateway.control import BUILTIN_COMMANDS, CommandRegistry
from gateway.egress import EgressService
from gateway.events import Event, EventBus
from gateway.files import FileService
from gateway.ingress import IngressService
from gateway.keys import KeyRing
from gateway.logsetup import install_stdlib_redaction
from gateway.looplag import LoopLagMonitor
from gateway.media.engine import MediaService
from gateway.metrics import NodeMetrics
from gateway.pluginmanager import PluginManager
from gateway.ratelimit import FailureLimiter
from gateway.rooms.service import RoomService
from gateway.security import TokenService, load_or_create_secret
from gateway.spool import UploadSpool
from gateway.storage import StorageRegistry
from gateway.store import Store

log = structlog.get_logger(__name__)


async def _maybe_await(results: list[Any]) -> None:
    for result in results:
        if inspect.isawaitable(result):
            await result


class Node:
    def __init__(self, config: Config, *, extra_plugins: dict[str, Any] | None = None) -> None:
        install_stdlib_redaction()
        self.config = config
        self.node_id = config.node.resolved_id()
        self.pm = PluginManager()
        self.pm.load(config, extra_plugins)
        self.metrics = NodeMetrics()
        self.events = EventBus(self._deliver_event)
        self.loop_lag = LoopLagMonitor(warn_ms=config.media.loop_lag_warn_ms)
        self.loop_lag.observers.append(self.metrics.observe_lag)
        self.store = Store(config.store_url, echo=config.store.echo, sqlite_wal=config.store.sqlite_wal)
        self.tokens: TokenService
        self.keys = KeyRing(self.store, config.auth.api_keys, cache_ttl_s=config.auth.key_cache_ttl_s)
        self.auth_failures = FailureLimiter(config.auth.max_failures, config.auth.failure_window_s)
        self.rooms = RoomService(self.store, self.events, config, node_id=self.node_id)
        self.rooms.failures = self.auth_failures
        self.commands = CommandRegistry(BUILTIN_COMMANDS)
        self.files = FileService(self.store, config.files_dir, max_bytes=int(config.files.max_size_mb * 1024 * 1024),
                                 allowed=config.files.allowed_types, public_url=self.public_url)
        self.storage = StorageRegistry()
        self.spool = UploadSpool(self, config.spool)
        self.media: MediaService = MediaService(self)
        self.rooms.media = self.media
        self.egress = EgressService(self)
        self.ingress = IngressService(self)
        self.app: web.Application | None = None
        self.ready = False
        self.started_at = 0.0
        self.bootstrap_credentials: tuple[str, str] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.urls: list[str] = []  # every address that reaches the listening socket

    async def verify_key(self, client: str, access_key: str, secret_key: str) -> None:
        """Check an API key pair, limiting failed attempts per client address and per key."""
        target = "key:" + access_key
        self.auth_failures.check(client, target)
        await self.keys.verify(access_key, secret_key)
        self.auth_failures.succeeded(client, target)

    # ------------------------------------------------------------------ events
    def _deliver_event(self, event: Event) -> None:
        self.metrics.events.labels(event.event).inc()
        self.pm.hook.mediagate_event(event=event, node=self)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> web.Application:
        loop = asyncio.get_running_loop()
        self.events.bind_loop(loop)
        self.config.node.data_dir.mkdir(parents=True, exist_ok=True)
        self.pm.hook.mediagate_configure(node=self)
        await self.store.open()
        self.tokens = TokenService(load_or_create_secret(self.config.auth.jwt_secret, self.config.node.data_dir))
        if self.config.auth.bootstrap_key and await self.keys.count() == 0:
            self.bootstrap_credentials = await self.keys.create("bootstrap")
            self._write_bootstrap_file(*self.bootstrap_credentials)
        self.storage.collect(self)
        await self.spool.start(resume=False)
        self.media.collect_templates()
        self.egress.collect_kinds()
        self.ingress.collect_kinds()
        for commands in self.pm.hook.mediagate_control_commands(node=self):
            for command in commands or []:
                self.commands.add(command)
        await self.rooms.load()
        from gateway.api.app import build_app  # the HTTP layer depends on the node, not the reverse

        self.app = build_app(self)
        self.loop_lag.start()
        await _maybe_await(self.pm.hook.mediagate_startup(node=self))
        await self.egress.restore()  # after startup, so observers see the node_restart events
        await self.ingress.restore()
        self.spool.resume()  # a crash's left-overs: after the restore, so their tasks can list them
        self.ready = True
        self.started_at = time.time()
        # what is loaded by now (modules, the app, the plugins) lives as long as the node: out
        # of the collector's sight, its full passes (which hold the GIL, so every media thread
        # waits) only walk what came since; else one pass over the node stalls ~100 ms
        # (bench_sip_media, 300 legs: gc_max_ms) and every leg and mix loses blocks
        gc.collect()
        gc.freeze()
        log.info("node started", node_id=self.node_id, plugins=self.pm.plugin_names(), store=_safe_url(self.store.url))
        return self.app

    def _write_bootstrap_file(self, access_key: str, secret_key: str) -> None:
        """Keep the first key where the operator can read it (0600), since the store holds only a hash."""
        path = self.config.node.data_dir / "bootstrap-key.txt"
        path.write_text(f"access_key = {access_key}\nsecret_key = {secret_key}\n")
        path.chmod(0o600)

    async def stop(self) -> None:
        self.ready = False
        gc.unfreeze()  # collectable again once released (a process that starts many nodes)
        await self.egress.shutdown()
        await self.ingress.shutdown()
        await self.rooms.shutdown()
        await self.media.shutdown()
        await self.spool.stop()
        hooks = self.pm.hook.mediagate_shutdown(node=self)
        await _maybe_await(hooks)
        await self.loop_lag.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()
        log.info("node stopped", node_id=self.node_id)

    async def serve(self, host: str | None = None, port: int | None = None) -> str:
        """Start and listen; returns the URL it listens on."""
        app = await self.start()
        # keepalive_timeout also bounds how long a new connection may take to send its request
        # head (aiohttp 3.14 arms it when the connection opens): slow-header clients are dropped
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     keepalive_timeout=self.config.http.keepalive_timeout_s)
        await self._runner.setup()
        bind = host or self.config.http.host
        site = web.TCPSite(self._runner, bind, self.config.http.port if port is None else port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1] if sockets else self.config.http.port
        self.urls = [f"http://{_url_host(address)}:{bound}" for address in reachable_addresses(bind)]
        self.url = self.config.node.public_url.rstrip("/") or self.urls[0]
        return self.url

    # ------------------------------------------------------------------ views
    def public_url(self) -> str:
        """The base URL clients use: configured, else the address the node listens on."""
        return self.config.node.public_url.rstrip("/") or self.url or self.config.public_url()

    def describe(self) -> dict[str, Any]:
        rooms = self.rooms.list()
        participants = sum(len(r.participants) for r in rooms)
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return {"node_id": self.node_id, "version": __version__, "url": self.public_url(),
                "rooms": len(rooms), "participants": participants,
                "load": {"cpu_count": os.cpu_count(), "load1": load1,
                         "loop_lag_p99_ms": round(self.loop_lag.percentile(0.99), 2),
                         "loop_lag_max_ms": round(self.loop_lag.max_ms, 2), **self.media.stats(),
                         "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0},
                "plugins": self.pm.plugin_names()}

    def data_path(self, *parts: str) -> Path:
        path = self.config.node.data_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def reachable_addresses(bind: str) -> list[str]:
    """The addresses a client can use to reach a socket bound to ``bind``: the address itself,
    or for a wildcard the loopback first, then this host's other addresses."""
    if bind not in ("", "0.0.0.0", "::"):
        return [bind]
    family = socket.AF_INET6 if bind == "::" else socket.AF_INET
    found = ["::1" if family == socket.AF_INET6 else "127.0.0.1"]
    candidates: list[str] = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_STREAM):
            candidates.append(str(info[4][0]))
    except OSError:
        pass
    try:  # the address of the default route (connect() on UDP sends nothing)
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(("2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1", 9))
            candidates.append(str(probe.getsockname()[0]))
    except OSError:
        pass
    for address in candidates:
        if address not in found and not address.startswith(("127.", "::1", "fe80:")):
            found.append(address)
    return found


def _safe_url(url: str) -> str:
    """A store URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
