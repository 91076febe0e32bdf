"""Room control commands (the Juphoon conference commands), in text or JSON form.

Text: ``setstate 0x8 0x0 [username:alice@example]``; JSON: ``{"cmd": "setstate", "mask": 8,
"state": 0, "target": "alice"}`` (key names are case-insensitive, as the seed's samples
vary). Each command is a :class:`ControlCommand`; plugins add or replace commands through
the ``mediagate_control_commands`` hook. A bad command is a :class:`BadRequest` that the
WebSocket turns into an error message; the connection stays open.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway import events as ev
from gateway.errors import BadRequest, Forbidden, MediagateError
from gateway.media.layout.model import Canvas, Layout, Region, SourceRef
from gateway.rooms.models import ParticipantUpdate
from gateway.rooms.participant import Role

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.participant import Participant
    from gateway.rooms.room import Room
    from gateway.security import Principal


@dataclass
class CommandContext:
    node: Node
    room: Room
    principal: Principal
    sender: Participant | None  # the participant behind the socket; None for operators
    session: Any = None  # the socket's own state (subscription mask) for subscribe commands

    @property
    def is_owner(self) -> bool:
        if self.principal.is_operator:
            return True
        return self.sender is not None and bool(self.sender.role & Role.OWNER)


Handler = Callable[[CommandContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]
TextParser = Callable[[list[str]], dict[str, Any]]


@dataclass
class ControlCommand:
    name: str
    handler: Handler
    parse_text: TextParser
    help: str = ""


# -------------------------------------------------------------------------------------------
# parsing
# -------------------------------------------------------------------------------------------

def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError as exc:
        raise BadRequest(f"{field} must be an integer (decimal or 0x hex), got {value!r}", field=field) from exc


def _tokens(text: str) -> list[str]:
    """Split a text command, keeping ``[username: x@y]`` URIs (which may hold spaces) whole."""
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", lambda m: "[" + m.group(1).replace(" ", "") + "]", text)
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _is_target(token: str) -> bool:
    return token.startswith("[") and token.endswith("]")


def parse(message: str) -> tuple[str, dict[str, Any]]:
    """A command message -> (name, arguments). Names and JSON keys are case-insensitive."""
    message = message.strip()
    if not message:
        raise BadRequest("empty command", field="cmd")
    if message.startswith("{"):
        from gateway.api.jsonbody import loads  # strict: bounded depth, finite numbers

        try:
            data = loads(message)
        except BadRequest as exc:
            raise BadRequest(exc.message, field="cmd") from exc
        if not isinstance(data, dict):
            raise BadRequest("a JSON command must be an object", field="cmd")
        args = {str(k).strip().lower(): v for k, v in data.items()}
        name = str(args.pop("cmd", "")).strip().lower()
        if not name:
            raise BadRequest("missing 'cmd'", field="cmd")
        return name, args
    text = message.lstrip("@")
    head, _, rest = text.partition(" ")
    if head.lower() in _RAW_TEXT:  # the argument is JSON: shlex would strip its quotes
        return head.lower(), _text_parsers[head.lower()]([rest])
    tokens = _tokens(text)
    if not tokens:  # "@", "@@@@": a prefix and no command
        raise BadRequest("empty command", field="cmd")
    name = tokens[0].lower()
    command = _text_parsers.get(name)
    if command is None:
        return name, {"_text": tokens[1:]}
    return name, command(tokens[1:])


def _need(tokens: list[str], count: int, usage: str) -> None:
    if len(tokens) < count:
        raise BadRequest(f"usage: {usage}", field="cmd")


def _split_target(tokens: list[str]) -> tuple[list[str], str | None]:
    if len(tokens) > 1 and _is_target(tokens[-1]):
        return tokens[:-1], tokens[-1]
    return tokens, None


def _p_bits(value_name: str) -> TextParser:
    def parse_bits(tokens: list[str]) -> dict[str, Any]:
        _need(tokens, 2, f"set{value_name} <mask> <{value_name}> [target]")
        out: dict[str, Any] = {"mask": tokens[0], value_name: tokens[1]}
        if len(tokens) > 2:
            out["target"] = tokens[2]
        return out
    return parse_bits


def _p_rest(key: str, with_target: bool) -> TextParser:
    def parse_rest(tokens: list[str]) -> dict[str, Any]:
        _need(tokens, 1, f"<{key}>")
        body, target = _split_target(tokens) if with_target else (tokens, None)
        out: dict[str, Any] = {key: " ".join(body)}
        if target:
            out["target"] = target
        return out
    return parse_rest


def _p_target_only(tokens: list[str]) -> dict[str, Any]:
    return {"target": tokens[0]} if tokens else {}


def _p_vsubscribe(tokens: list[str]) -> dict[str, Any]:
    _need(tokens, 2, "vsubscribe <target> <state>")
    return {"target": tokens[0], "state": tokens[1]}


def _p_numbers(*names: str, optional_uri: bool = True) -> TextParser:
    def parse_numbers(tokens: list[str]) -> dict[str, Any]:
        _need(tokens, len(names), " ".join(f"<{n}>" for n in names) + (" [uri]" if optional_uri else ""))
        out: dict[str, Any] = dict(zip(names, tokens, strict=False))
        if optional_uri and len(tokens) > len(names):
            out["uri"] = tokens[len(names)]
        return out
    return parse_numbers


def _p_setlayout(tokens: list[str]) -> dict[str, Any]:
    try:
        return {"layout": json.loads(" ".join(tokens))}
    except json.JSONDecodeError as exc:
        raise BadRequest("setlayout takes a JSON list: [[id, ps, x, y, w, h], ...]", field="layout") from exc


_RAW_TEXT = {"setlayout"}

_text_parsers: dict[str, TextParser] = {
    "setstate": _p_bits("state"),
    "setrole": _p_bits("role"),
    "setnick": _p_rest("nick", True),
    "kickuser": _p_target_only,
    "settitle": _p_rest("title", False),
    "sendtext": _p_rest("text", True),
    "subscribe": _p_numbers("mask", optional_uri=False),
    "vsubscribe": _p_vsubscribe,
    "setmergemode": _p_numbers("mergemode", optional_uri=False),
    "setlayout": _p_setlayout,
    "setmergemode_i": _p_numbers("mode", "scsmode"),
    "setmerge_i": _p_numbers("width", "height", "mode", "scsmode", "fps"),
}


# -------------------------------------------------------------------------------------------
# handlers
# -------------------------------------------------------------------------------------------

def _target(ctx: CommandContext, args: dict[str, Any]) -> Participant:
    """The command's target participant; default is the sender itself."""
    target = args.get("target")
    if target in (None, ""):
        if ctx.sender is None:
            raise BadRequest("an operator must name a target", field="target")
        return ctx.sender
    found = ctx.node.rooms.participant(ctx.room, str(target))
    if ctx.sender is not None and found is not ctx.sender and not ctx.is_owner:
        raise Forbidden("only the room owner may act on other participants", code="not_owner", field="target")
    return found


def _owner_only(ctx: CommandContext, what: str) -> None:
    if not ctx.is_owner:
        raise Forbidden(f"only the room owner may {what}", code="not_owner")


async def cmd_setstate(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    participant = _target(ctx, args)
    mask, value = _int(args.get("mask"), "mask"), _int(args.get("state"), "state")
    ctx.node.rooms.apply_state(ctx.room, participant, mask, value)
    ctx.node.events.emit(ev.PARTICIPANT_UPDATED, ctx.room.room_id, participant=participant.to_dict(),
                         changes=["state"])
    return {"target": participant.participant_id, "state": participant.state}


async def cmd_setrole(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    participant = _target(ctx, args)
    mask, value = _int(args.get("mask"), "mask"), _int(args.get("role"), "role")
    if mask & Role.OWNER and not ctx.is_owner:
        raise Forbidden("only the owner may hand over ownership", code="not_owner", field="role")
    participant.set_role_bits(mask, value)
    ctx.node.events.emit(ev.PARTICIPANT_UPDATED, ctx.room.room_id, participant=participant.to_dict(),
                         changes=["role"])
    return {"target": participant.participant_id, "role": participant.role}


async def cmd_setnick(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    nick = str(args.get("nick") or "").strip()
    if not nick:
        raise BadRequest("nick must not be empty", field="nick")
    participant = _target(ctx, args)
    await ctx.node.rooms.update_participant(ctx.room.room_id, participant.participant_id,
                                            ParticipantUpdate(name=nick[:128]))
    return {"target": participant.participant_id, "nick": participant.name}


async def cmd_kickuser(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "kick participants")
    participant = _target(ctx, args)
    await ctx.node.rooms.kick(ctx.room.room_id, participant.participant_id)
    return {"target": participant.participant_id}


async def cmd_settitle(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "set the title")
    title = str(args.get("title") or "")[:256]
    await ctx.node.rooms.set_title(ctx.room.room_id, title)
    return {"title": title}


async def cmd_sendtext(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    text = str(args.get("text") or "")
    if not text:
        raise BadRequest("text must not be empty", field="text")
    if len(text.encode()) > 4096:
        raise BadRequest("text is longer than 4096 bytes", field="text")
    target = args.get("target")
    to = None
    if target:
        to = ctx.node.rooms.participant(ctx.room, str(target)).participant_id
    sender = ctx.sender.participant_id if ctx.sender else None
    ctx.node.events.emit(ev.ROOM_CHAT, ctx.room.room_id, sender=sender,
                         sender_name=ctx.sender.name if ctx.sender else "operator", text=text, target=to)
    return {"target": to}


async def cmd_subscribe(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    mask = _int(args.get("mask"), "mask")
    if ctx.session is not None:
        ctx.session.mask = mask
    return {"mask": mask}


async def cmd_vsubscribe(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    if ctx.sender is None:
        raise BadRequest("vsubscribe is for participants", field="target")
    target = ctx.node.rooms.participant(ctx.room, str(args.get("target") or ""))
    state = bool(_int(args.get("state", 1), "state"))
    ctx.sender.video_subscriptions[target.participant_id] = state
    return {"target": target.participant_id, "state": int(state)}


# Juphoon merge modes and smart modes -> layout templates
MERGE_MODES = {1: "tile", 2: "podium", 3: "lecture", 4: "custom", 5: "smart"}
SMART_MODES = {1: "free", 2: "rect", **{n: f"big_small_x{n - 1}" for n in range(3, 12)},
               12: "big_small_top", 13: "big_small_bottom"}
SCREEN_MODES = {1: "screen", 2: "big_small_top", 3: "floating", 4: "screen_share"}


def _current_layout(ctx: CommandContext) -> Layout:
    layout = ctx.room.layout
    if layout is None:
        canvas = ctx.room.setting("canvas")
        layout = Layout(canvas=Canvas.model_validate(canvas) if canvas else Canvas())
    return layout


def _layout(data: dict[str, Any]) -> Layout:
    """Validate a layout built by a command: an impossible one is a 400 naming the field."""
    from gateway.api.routing import validation_error

    try:
        return Layout.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


async def _apply(ctx: CommandContext, layout: Layout) -> dict[str, Any]:
    await ctx.node.rooms.set_layout(ctx.room.room_id, layout)
    return {"template": layout.template, "screen_template": layout.screen_template}


def _smart(ctx: CommandContext, args: dict[str, Any], layout_data: dict[str, Any]) -> dict[str, Any]:
    mode, scs = _int(args.get("mode"), "mode"), _int(args.get("scsmode"), "scsmode")
    if mode not in SMART_MODES:
        raise BadRequest(f"mode must be 1-13, got {mode}", field="mode")
    if scs not in SCREEN_MODES:
        raise BadRequest(f"scsMode must be 1-4, got {scs}", field="scsmode")
    layout_data.update(template=SMART_MODES[mode], screen_template=SCREEN_MODES[scs], regions=[])
    uri = args.get("uri")
    main = None
    if uri:
        try:  # the identity, not the participant id: the choice survives a reconnect
            main = ctx.node.rooms.participant(ctx.room, str(uri)).identity
        except MediagateError:
            main = None  # the seed: an empty or invalid uri falls back to the first user
    layout_data["main"] = main
    return layout_data


async def cmd_setmergemode(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "change the layout")
    mode = _int(args.get("mergemode"), "mergeMode")
    if mode not in MERGE_MODES:
        raise BadRequest(f"mergeMode must be 1-5, got {mode}", field="mergeMode")
    data = _current_layout(ctx).model_dump()
    if mode == 4:
        if not data["regions"]:
            raise BadRequest("custom mode needs a layout: send setlayout first", field="mergeMode")
        data["template"] = "custom"
    elif mode == 5:
        if data["template"] not in set(SMART_MODES.values()):
            data.update(template="free", screen_template="speaker")
    else:
        data.update(template=MERGE_MODES[mode], screen_template=None, regions=[])
    return await _apply(ctx, _layout(data))


async def cmd_setlayout(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "change the layout")
    entries = args.get("layout")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("layout must be a non-empty list of [id, ps, x, y, w, h]", field="layout")
    regions = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 6:
            raise BadRequest("each entry is [id, ps, x, y, w, h]", field=f"layout[{index}]")
        target, _size_level, x, y, w, h = entry
        participant = ctx.node.rooms.participant(ctx.room, str(target))
        try:
            regions.append(Region(source=SourceRef(participant=participant.participant_id), x=x, y=y, w=w, h=h,
                                  units="fraction", z=min(index, 16), fit="fill"))
        except ValueError as exc:
            raise BadRequest(f"bad region: {exc}", field=f"layout[{index}]") from exc
    data = _current_layout(ctx).model_dump()
    data.update(template="custom", regions=[r.model_dump() for r in regions], screen_template=None)
    return await _apply(ctx, _layout(data))


async def cmd_setmergemode_i(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "change the layout")
    data = _smart(ctx, args, _current_layout(ctx).model_dump())
    return await _apply(ctx, _layout(data))


async def cmd_setmerge_i(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    _owner_only(ctx, "change the layout")
    data = _smart(ctx, args, _current_layout(ctx).model_dump())
    fps = _int(args.get("fps"), "fps")
    if not 1 <= fps <= 30:
        raise BadRequest(f"fps must be 1-30, got {fps}", field="fps")
    data["canvas"] = {**data["canvas"], "width": _int(args.get("width"), "width"),
                      "height": _int(args.get("height"), "height"), "fps": fps}
    return await _apply(ctx, _layout(data))


BUILTIN_COMMANDS = [
    ControlCommand("setstate", cmd_setstate, _text_parsers["setstate"], "setstate <mask> <state> [target]"),
    ControlCommand("setrole", cmd_setrole, _text_parsers["setrole"], "setrole <mask> <role> [target]"),
    ControlCommand("setnick", cmd_setnick, _text_parsers["setnick"], "setnick <nick> [target]"),
    ControlCommand("kickuser", cmd_kickuser, _text_parsers["kickuser"], "kickuser [target]"),
    ControlCommand("settitle", cmd_settitle, _text_parsers["settitle"], "settitle <title>"),
    ControlCommand("sendtext", cmd_sendtext, _text_parsers["sendtext"], "sendtext <text> [target]"),
    ControlCommand("subscribe", cmd_subscribe, _text_parsers["subscribe"], "subscribe <mask>"),
    ControlCommand("vsubscribe", cmd_vsubscribe, _text_parsers["vsubscribe"], "vsubscribe <target> <0|1>"),
    ControlCommand("setmergemode", cmd_setmergemode, _text_parsers["setmergemode"], "setmergemode <1-5>"),
    ControlCommand("setlayout", cmd_setlayout, _text_parsers["setlayout"],
                   '{"cmd":"setlayout","layout":[[id, ps, x, y, w, h], ...]}'),
    ControlCommand("setmergemode_i", cmd_setmergemode_i, _text_parsers["setmergemode_i"],
                   "setmergemode_i <mode> <scsMode> [uri]"),
    ControlCommand("setmerge_i", cmd_setmerge_i, _text_parsers["setmerge_i"],
                   "setmerge_i <width> <height> <mode> <scsMode> <fps> [uri]"),
]


class CommandRegistry:
    def __init__(self, commands: list[ControlCommand]) -> None:
        self.commands = {c.name: c for c in commands}

    def add(self, command: ControlCommand) -> None:
        self.commands[command.name] = command
        _text_parsers[command.name] = command.parse_text

    async def run(self, ctx: CommandContext, message: str) -> tuple[str, dict[str, Any]]:
        name, args = parse(message)
        command = self.commands.get(name)
        if command is None:
            raise BadRequest(f"unknown command {name!r}; known: {', '.join(sorted(self.commands))}",
                             code="unknown_command", field="cmd")
        if "_text" in args:
            args = command.parse_text(args["_text"])
        return name, (await command.handler(ctx, args) or {})
