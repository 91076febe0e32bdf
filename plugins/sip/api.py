"""HTTP API of the SIP edge: gates, accounts, routes, dial-out and calls. Handlers only
translate HTTP into calls on the service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.api.middleware import require_operator
from gateway.api.routing import ApiRouter
from plugins.sip.models import (
    AccountBody,
    AccountPatch,
    CallPatch,
    DialBody,
    DtmfBody,
    GateBody,
    GatePatch,
    RouteBody,
    RoutePatch,
)

if TYPE_CHECKING:
    from plugins.sip.service import SipService


def _gate_row(body: GateBody) -> dict[str, Any]:
    data = body.model_dump(by_alias=True)
    return {"name": data.pop("name"), "enabled": data.pop("enabled"), "config": data}


def _public_account(row: dict[str, Any], service: SipService) -> dict[str, Any]:
    cfg = {k: v for k, v in row["config"].items() if k != "password"}
    binding = service.registrar.binding(row["username"]) if service.registrar else None
    return {"account_id": row["account_id"], "username": row["username"], **cfg,
            "registered": binding is not None, "registration": binding.describe() if binding else None,
            "created_at": row["created_at"]}


def _public_route(row: dict[str, Any]) -> dict[str, Any]:
    return {"route_id": row["route_id"], "match": row["match"], **row["config"], "created_at": row["created_at"]}


class SipApi:
    def __init__(self, service: SipService) -> None:
        self.s = service

    # ---------------------------------------------------------------- gates
    async def create_gate(self, request: web.Request, body: GateBody) -> dict[str, Any]:
        """Add a trunk (PBX or carrier); with register=true the node registers to it."""
        require_operator(request, "sip.gate.create")
        row = await self.s.store.gates.create(_gate_row(body))
        await self.s.reload()
        return self._gate(row["gate_id"])

    def _gate(self, gate_id: str) -> dict[str, Any]:
        gate = self.s.gates.get(gate_id) if self.s.gates else None
        assert gate is not None
        return gate.describe()

    async def list_gates(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.gate.list")
        return {"gates": [g.describe() for g in (self.s.gates.gates.values() if self.s.gates else [])]}

    async def get_gate(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.gate.read")
        gate_id = request.match_info["gate_id"]
        await self.s.store.gates.get(gate_id)
        return self._gate(gate_id)

    async def update_gate(self, request: web.Request, body: GatePatch) -> dict[str, Any]:
        require_operator(request, "sip.gate.update")
        gate_id = request.match_info["gate_id"]
        row = await self.s.store.gates.get(gate_id)
        changes = body.model_dump(exclude_unset=True, by_alias=True)
        merged = GateBody.model_validate({"name": row["name"], "enabled": row["enabled"], **row["config"], **changes})
        await self.s.store.gates.update(gate_id, _gate_row(merged))
        await self.s.reload()
        return self._gate(gate_id)

    async def delete_gate(self, request: web.Request) -> None:
        require_operator(request, "sip.gate.delete")
        await self.s.store.gates.delete(request.match_info["gate_id"])
        await self.s.reload()

    # ---------------------------------------------------------------- accounts
    async def create_account(self, request: web.Request, body: AccountBody) -> dict[str, Any]:
        """A phone that registers with the gateway (digest auth with this password)."""
        require_operator(request, "sip.account.create")
        data = body.model_dump()
        row = await self.s.store.accounts.create({"username": data.pop("username"), "config": data})
        await self.s.reload()
        return _public_account(row, self.s)

    async def list_accounts(self, request: web.Request) -> dict[str, Any]:
        """Accounts, with who is registered from where."""
        require_operator(request, "sip.account.list")
        return {"accounts": [_public_account(r, self.s) for r in await self.s.store.accounts.list()]}

    async def get_account(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.account.read")
        return _public_account(await self.s.store.accounts.get(request.match_info["account_id"]), self.s)

    async def update_account(self, request: web.Request, body: AccountPatch) -> dict[str, Any]:
        require_operator(request, "sip.account.update")
        account_id = request.match_info["account_id"]
        row = await self.s.store.accounts.get(account_id)
        config = {**row["config"], **body.model_dump(exclude_unset=True)}
        row = await self.s.store.accounts.update(account_id, {"config": config})
        await self.s.reload()
        return _public_account(row, self.s)

    async def delete_account(self, request: web.Request) -> None:
        require_operator(request, "sip.account.delete")
        row = await self.s.store.accounts.get(request.match_info["account_id"])
        await self.s.store.accounts.delete(row["account_id"])
        if self.s.registrar is not None:
            self.s.registrar.bindings.pop(row["username"], None)
        await self.s.reload()

    # ---------------------------------------------------------------- routes
    async def create_route(self, request: web.Request, body: RouteBody) -> dict[str, Any]:
        """An inbound rule: a dialled number (or pattern) to a room, optionally behind a PIN."""
        require_operator(request, "sip.route.create")
        data = body.model_dump()
        row = await self.s.store.routes.create({"match": data.pop("match"), "config": data})
        await self.s.reload()
        return _public_route(row)

    async def list_routes(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.route.list")
        return {"routes": [_public_route(r) for r in await self.s.store.routes.list()]}

    async def get_route(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.route.read")
        return _public_route(await self.s.store.routes.get(request.match_info["route_id"]))

    async def update_route(self, request: web.Request, body: RoutePatch) -> dict[str, Any]:
        require_operator(request, "sip.route.update")
        route_id = request.match_info["route_id"]
        row = await self.s.store.routes.get(route_id)
        changes = body.model_dump(exclude_unset=True)
        merged = RouteBody.model_validate({"match": row["match"], **row["config"], **changes})
        data = merged.model_dump()
        row = await self.s.store.routes.update(route_id, {"match": data.pop("match"), "config": data})
        await self.s.reload()
        return _public_route(row)

    async def delete_route(self, request: web.Request) -> None:
        require_operator(request, "sip.route.delete")
        await self.s.store.routes.delete(request.match_info["route_id"])
        await self.s.reload()

    # ---------------------------------------------------------------- calls
    async def dial(self, request: web.Request, body: DialBody) -> dict[str, Any]:
        """Dial out into the room: a SIP URI, a registered account by name, or a number through a gate."""
        room_id = request.match_info["room_id"]
        require_operator(request, "sip.call.create", room_id)
        call = await self.s.dial(room_id, body.to, gate_id=body.gate_id, from_user=body.from_,
                                 caller_name=body.caller_name, gain_db=body.gain_db, identity=body.identity,
                                 callback_url=body.callback_url)
        return call.describe()

    async def list_calls(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.call.list")
        return {"calls": [c.describe() for c in self.s.calls.values()]}

    async def get_call(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.call.read")
        return self.s.get(request.match_info["call_id"]).describe()

    async def update_call(self, request: web.Request, body: CallPatch) -> dict[str, Any]:
        """Mute/unmute the leg (nobody hears it), change its gain, or hold it."""
        require_operator(request, "sip.call.update")
        call = self.s.get(request.match_info["call_id"])
        if body.gain_db is not None:
            self.s.set_gain(call, body.gain_db)
        if body.muted is not None and call.room_id and call.participant_id and not call.finished:
            from gateway.rooms.models import ParticipantUpdate

            await self.s.node.rooms.update_participant(call.room_id, call.participant_id,
                                                       ParticipantUpdate(audio_muted=body.muted))
            call.muted = body.muted
        if body.hold is not None and call.leg is not None:
            call.on_hold = body.hold
            call.leg.sending = not body.hold
        self.s.call_changed(call)
        return call.describe()

    async def end_call(self, request: web.Request) -> dict[str, Any]:
        require_operator(request, "sip.call.delete")
        call = self.s.get(request.match_info["call_id"])
        await self.s.hangup(call, reason="api")
        return call.describe()

    async def dtmf(self, request: web.Request, body: DtmfBody) -> dict[str, Any]:
        """Send DTMF digits on the call (RFC 4733 when negotiated, else SIP INFO)."""
        require_operator(request, "sip.call.dtmf")
        call = self.s.get(request.match_info["call_id"])
        method = self.s.send_dtmf(call, body.digits, body.duration_ms, body.inter_tone_gap_ms)
        return {"call_id": call.call_id, "digits": body.digits, "method": method}

    def register(self, router: ApiRouter) -> None:
        tags = ("sip",)
        for kind, create, body, patch in (("gates", self.create_gate, GateBody, GatePatch),
                                          ("accounts", self.create_account, AccountBody, AccountPatch),
                                          ("routes", self.create_route, RouteBody, RoutePatch)):
            key = {"gates": "gate_id", "accounts": "account_id", "routes": "route_id"}[kind]
            single = kind[:-1]
            router.add("POST", f"/v1/sip/{kind}", create, body=body, status=201, tags=tags, errors=(409, 422))
            router.add("GET", f"/v1/sip/{kind}", getattr(self, f"list_{kind}"), tags=tags)
            router.add("GET", f"/v1/sip/{kind}/{{{key}}}", getattr(self, f"get_{single}"), tags=tags, errors=(404,))
            router.add("PATCH", f"/v1/sip/{kind}/{{{key}}}", getattr(self, f"update_{single}"), body=patch,
                       tags=tags, errors=(404, 422))
            router.add("DELETE", f"/v1/sip/{kind}/{{{key}}}", getattr(self, f"delete_{single}"), status=204,
                       tags=tags, errors=(404,))
        router.add("POST", "/v1/rooms/{room_id}/sip/calls", self.dial, body=DialBody, status=201, tags=tags,
                   errors=(404, 409, 422, 503))
        router.add("GET", "/v1/sip/calls", self.list_calls, tags=tags)
        router.add("GET", "/v1/sip/calls/{call_id}", self.get_call, tags=tags, errors=(404,))
        router.add("PATCH", "/v1/sip/calls/{call_id}", self.update_call, body=CallPatch, tags=tags, errors=(404,))
        router.add("DELETE", "/v1/sip/calls/{call_id}", self.end_call, tags=tags, errors=(404,))
        router.add("POST", "/v1/sip/calls/{call_id}/dtmf", self.dtmf, body=DtmfBody, tags=tags, errors=(404, 409))
