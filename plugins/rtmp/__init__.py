"""The RTMP edge: an ingest server that makes OBS/ffmpeg publishers room participants
(ingress kind ``rtmp``), and CDN pushes of a room's composite or of one participant
(egress kind ``rtmp``). Configured by ``[plugins.rtmp]``."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from gateway.errors import MediagateError, Unprocessable
from gateway.hookspecs import hookimpl
from gateway.ingress import IngressControl, IngressRequest
from gateway.rooms.participant import ParticipantKind
from gateway.security import Permission
from plugins.rtmp.config import RtmpConfig
from plugins.rtmp.ingest import Publisher
from plugins.rtmp.push import RtmpPushKind
from plugins.rtmp.server import RtmpServer
from plugins.rtmp.session import Rejected

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task
    from plugins.rtmp.session import RtmpConnection

log = structlog.get_logger(__name__)
EVENT_REJECTED = "rtmp.rejected"


class RtmpIngressRunner:
    """An ingress of kind rtmp: a stream key waiting for, or serving, one publisher at a time."""

    def __init__(self, plugin: RtmpPlugin, task: Task, key: str) -> None:
        self.plugin = plugin
        self.task = task
        self.key = key
        self.publisher: Publisher | None = None

    @property
    def participant_id(self) -> str:
        return self.publisher.participant_id if self.publisher else ""

    async def control(self, command: IngressControl) -> dict[str, Any]:
        raise Unprocessable(f"an RTMP ingress cannot {command.action}: the publisher controls its stream",
                            code="unsupported_action", field="action")

    async def stop(self) -> dict[str, Any]:
        self.plugin.keys.pop(self.key, None)
        publisher = self.publisher
        if publisher is not None:
            publisher.connection.close("ingress_stopped")
            await publisher.end("ingress_stopped")
            return {"state": "inactive", **publisher.stats()}
        return {"state": "inactive"}


class RtmpIngressKind:
    name = "rtmp"

    def __init__(self, plugin: RtmpPlugin) -> None:
        self.plugin = plugin

    def validate(self, request: IngressRequest, node: Node) -> None:
        if self.plugin.server is None:
            raise Unprocessable("the RTMP ingest server is not listening (see [plugins.rtmp] and the log)",
                                code="rtmp_not_listening")

    async def start(self, task: Task, request: IngressRequest, room: Room, node: Node) -> RtmpIngressRunner:
        key = secrets.token_urlsafe(18)
        runner = RtmpIngressRunner(self.plugin, task, key)
        self.plugin.keys[key] = runner
        server_url = self.plugin.server_url()
        task.result.update(rtmp_url=server_url, stream_key=key, publish_url=f"{server_url}/{key}",
                           state="inactive", participant_id=None)
        return runner


class RtmpPlugin:
    config_model = RtmpConfig

    def __init__(self) -> None:
        self.config = RtmpConfig()
        self.node: Node | None = None
        self.server: RtmpServer | None = None
        self.keys: dict[str, RtmpIngressRunner] = {}

    # ------------------------------------------------------------------ hooks
    @hookimpl
    def mediagate_configure(self, node: Node) -> None:
        self.node = node

    @hookimpl
    async def mediagate_startup(self, node: Node) -> None:
        if not self.config.enabled:
            return
        server = RtmpServer(self.config, self.authorize)
        try:
            await server.start()
        except OSError as exc:
            # the rest of the node (and CDN pushes) works without ingest: say so loudly, go on
            log.error("RTMP ingest is not listening", host=self.config.host, port=self.config.port, error=str(exc))
            return
        self.server = server

    @hookimpl
    async def mediagate_shutdown(self, node: Node) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    @hookimpl
    def mediagate_ingress_kinds(self, node: Node) -> list[RtmpIngressKind]:
        return [RtmpIngressKind(self)]

    @hookimpl
    def mediagate_egress_kinds(self, node: Node) -> list[RtmpPushKind]:
        return [RtmpPushKind(self.config)]

    # ------------------------------------------------------------------ ingest
    def server_url(self) -> str:
        assert self.node is not None
        host = self.config.public_host or urlsplit(self.node.public_url()).hostname or "127.0.0.1"
        port = self.server.port if self.server is not None else self.config.port
        return f"rtmp://{host}:{port}/{self.config.app}"

    async def authorize(self, key: str, connection: RtmpConnection) -> Publisher:
        """A publish's stream key: an ingress's key, or a join token with publish rights."""
        try:
            return await self._authorize(key, connection)
        except Rejected as exc:
            assert self.node is not None
            self.node.events.emit(EVENT_REJECTED, exc.room_id, code=exc.code, reason=exc.reason,
                                  peer=connection.peer, app=connection.app)
            raise

    async def _authorize(self, key: str, connection: RtmpConnection) -> Publisher:
        node = self.node
        assert node is not None
        if not key:
            raise Rejected("no_stream_key", "no stream key in the publish")
        runner = self.keys.get(key)
        if runner is not None:
            task = runner.task
            spec = task.spec
            publisher = await self._join(connection, task.room_id, spec["identity"], spec.get("name") or "",
                                         None, task)
            previous, runner.publisher = runner.publisher, publisher
            task.result.update(state="publishing", participant_id=publisher.participant_id)
            await node.ingress.set_status(task, task.status, state="publishing",
                                          participant_id=publisher.participant_id,
                                          replaced=previous.participant_id if previous else None)
            publisher.on_end = lambda: self._publisher_ended(runner, publisher)
            return publisher
        if key.count(".") == 2:  # a JWT: a join token as the stream key
            try:
                principal = node.tokens.verify(key)
            except MediagateError as exc:
                raise Rejected(exc.code, f"stream key is not a valid join token ({exc})") from exc
            if principal.kind != "participant" or not principal.room_id:
                raise Rejected("not_a_join_token", "the token is not a join token for a room")
            if not principal.can(Permission.ENTER) or not (
                    principal.can(Permission.SEND_VIDEO) or principal.can(Permission.SEND_AUDIO)):
                raise Rejected("no_publish_permission", "the join token may not publish", principal.room_id)
            return await self._join(connection, principal.room_id, principal.subject, principal.name or "",
                                    principal.permissions, None, admission=principal.admission)
        raise Rejected("unknown_stream_key", "unknown stream key")

    async def _join(self, connection: RtmpConnection, room_id: str, identity: str, name: str,
                    permissions: int | None, task: Task | None, *, admission: str | None = None) -> Publisher:
        node = self.node
        assert node is not None
        try:
            room = await node.rooms.get(room_id)
            node.media.room_media(room)
            extra = {} if permissions is None else {"permissions": permissions}
            participant = await node.rooms.join(room_id, identity, kind=ParticipantKind.RTMP, name=name or identity,
                                                operator=task is not None, admission=admission, **extra)
        except MediagateError as exc:
            raise Rejected(exc.code, str(exc), room_id) from exc
        publisher = Publisher(node, connection, room_id, participant, task)
        participant.edge = publisher
        log.info("rtmp publisher joined", room_id=room_id, participant_id=participant.participant_id,
                 identity=identity, peer=connection.peer)
        return publisher

    async def _publisher_ended(self, runner: RtmpIngressRunner, publisher: Publisher) -> None:
        if runner.publisher is not publisher or not runner.task.active:
            return  # replaced by a newer publish, or the ingress is being stopped
        runner.publisher = None
        assert self.node is not None
        runner.task.result.update(state="inactive", participant_id=None)
        await self.node.ingress.set_status(runner.task, runner.task.status, state="inactive",
                                           participant_id=publisher.participant_id)
