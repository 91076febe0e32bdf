"""Parsing of the control commands (text and JSON forms) and the command registry, without a node."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.control import (
    BUILTIN_COMMANDS,
    MERGE_MODES,
    SMART_MODES,
    CommandContext,
    CommandRegistry,
    ControlCommand,
    parse,
)
from gateway.errors import BadRequest
from gateway.security import Principal


@pytest.mark.parametrize(("message", "name", "args"), [
    ("setstate 0x8 0x0", "setstate", {"mask": "0x8", "state": "0x0"}),
    ("setstate 0x2 0x0 id0", "setstate", {"mask": "0x2", "state": "0x0", "target": "id0"}),
    ("SetRole 4 4 [username:bob@example.com]", "setrole",
     {"mask": "4", "role": "4", "target": "[username:bob@example.com]"}),
    ("setnick 张三", "setnick", {"nick": "张三"}),
    ("setnick 李 四 [username:alice@x.com]", "setnick", {"nick": "李 四", "target": "[username:alice@x.com]"}),
    ("kickuser [username:bob@x]", "kickuser", {"target": "[username:bob@x]"}),
    ("kickuser", "kickuser", {}),
    ("settitle Weekly 周会", "settitle", {"title": "Weekly 周会"}),
    ("sendtext hello world", "sendtext", {"text": "hello world"}),
    ("sendtext hi [username:bob@x]", "sendtext", {"text": "hi", "target": "[username:bob@x]"}),
    ("subscribe 0x8", "subscribe", {"mask": "0x8"}),
    ("vsubscribe [username:actor@sample.cloud.justalk.com] 1", "vsubscribe",
     {"target": "[username:actor@sample.cloud.justalk.com]", "state": "1"}),
    ("@setmergemode 3", "setmergemode", {"mergemode": "3"}),
    ("@setmergemode_i 1 3 [username: qqqq@sample.cloud.justalk.com]", "setmergemode_i",
     {"mode": "1", "scsmode": "3", "uri": "[username:qqqq@sample.cloud.justalk.com]"}),
    ("@setmerge_i 1600 900 1 3 24 [username:qqqq@sample.cloud.justalk.com]", "setmerge_i",
     {"width": "1600", "height": "900", "mode": "1", "scsmode": "3", "fps": "24",
      "uri": "[username:qqqq@sample.cloud.justalk.com]"}),
    ("setmerge_i 640 360 1 4 24", "setmerge_i",
     {"width": "640", "height": "360", "mode": "1", "scsmode": "4", "fps": "24"}),
])
def test_text_form(message: str, name: str, args: dict[str, Any]) -> None:
    assert parse(message) == (name, args)


@pytest.mark.parametrize(("message", "name", "args"), [
    ('{"cmd":"setstate", "mask":8, "state":0, "target":"alice"}', "setstate",
     {"mask": 8, "state": 0, "target": "alice"}),
    ('{"Cmd":"setrole", "Mask":4, "Role":4}', "setrole", {"mask": 4, "role": 4}),
    ('{"cmd": "Setnick", "nick": "张三"}', "setnick", {"nick": "张三"}),
    ('{"cmd":"settitle" ,"Title":"t"}', "settitle", {"title": "t"}),
    ('{"cmd":"setmergemode ", "mergeMode":2}', "setmergemode", {"mergemode": 2}),
    ('{"cmd":"setlayout","layout":[["id0",512,0,0,0.5,1]]}', "setlayout", {"layout": [["id0", 512, 0, 0, 0.5, 1]]}),
    ('  {"cmd":"subscribe","mask":"0x8","id":3}  ', "subscribe", {"mask": "0x8", "id": 3}),
])
def test_json_form(message: str, name: str, args: dict[str, Any]) -> None:
    assert parse(message) == (name, args)


def test_unknown_text_command_keeps_its_tokens() -> None:
    assert parse("publish true") == ("publish", {"_text": ["true"]})


@pytest.mark.parametrize(("message", "field"), [
    ("", "cmd"), ("   ", "cmd"), ('{"cmd": "setstate", ', "cmd"), ('{"mask": 8}', "cmd"), ('{"cmd": ""}', "cmd"),
    ("setstate 0x8", "cmd"), ("setrole", "cmd"), ("setnick", "cmd"), ("sendtext", "cmd"), ("settitle", "cmd"),
    ("subscribe", "cmd"), ("vsubscribe bob", "cmd"), ("setmergemode", "cmd"), ("setmergemode_i 1", "cmd"),
    ("setmerge_i 640 360 1 4", "cmd"), ("setlayout [[", "layout"),
])
def test_parse_errors(message: str, field: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(message)
    assert info.value.field == field and info.value.status == 400


def test_mode_tables() -> None:
    assert MERGE_MODES == {1: "tile", 2: "podium", 3: "lecture", 4: "custom", 5: "smart"}
    assert SMART_MODES[1] == "free" and SMART_MODES[2] == "rect"
    assert [SMART_MODES[n] for n in range(3, 12)] == [f"big_small_x{n}" for n in range(2, 11)]
    assert SMART_MODES[12] == "big_small_top" and SMART_MODES[13] == "big_small_bottom"


def _ctx(session: Any = None) -> CommandContext:
    return CommandContext(node=SimpleNamespace(), room=SimpleNamespace(), principal=Principal("operator", "ak"),
                          sender=None, session=session)


async def test_registry_runs_text_and_json_subscribe() -> None:
    registry = CommandRegistry(BUILTIN_COMMANDS)
    session = SimpleNamespace(mask=0xF)
    assert await registry.run(_ctx(session), "subscribe 0x8") == ("subscribe", {"mask": 8})
    assert session.mask == 8
    assert await registry.run(_ctx(session), '{"cmd":"subscribe","mask":"0x3"}') == ("subscribe", {"mask": 3})
    assert session.mask == 3
    with pytest.raises(BadRequest) as info:
        await registry.run(_ctx(session), "subscribe lots")
    assert info.value.field == "mask"
    assert session.mask == 3


async def test_registry_unknown_command() -> None:
    registry = CommandRegistry(BUILTIN_COMMANDS)
    with pytest.raises(BadRequest) as info:
        await registry.run(_ctx(), "dance 1 2")
    assert (info.value.code, info.value.field) == ("unknown_command", "cmd")
    assert "setstate" in info.value.message


async def test_registry_plugin_command_text_and_json() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args)
        return {"echo": args.get("what")}

    def parse_text(tokens: list[str]) -> dict[str, Any]:
        return {"what": " ".join(tokens)}

    registry = CommandRegistry(BUILTIN_COMMANDS)
    registry.add(ControlCommand("zz_echo_test", handler, parse_text, "zz_echo_test <words>"))
    assert await registry.run(_ctx(), "zz_echo_test a b") == ("zz_echo_test", {"echo": "a b"})
    assert await registry.run(_ctx(), '{"cmd":"ZZ_Echo_Test","what":"json"}') == ("zz_echo_test", {"echo": "json"})
    assert seen == [{"what": "a b"}, {"what": "json"}]
