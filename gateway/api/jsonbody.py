"""Strict JSON for request bodies and WebSocket commands: RFC 8259 only (no NaN/Infinity, no
number that overflows to infinity) and a bounded nesting depth, checked before parsing so a
hostile body cannot exhaust the parser's stack. Integer ranges are the models' business (they
name the field)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import BadRequest

MAX_DEPTH = 64  # deepest array/object nesting accepted; layouts need about 6
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _malformed(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_json")


def _constant(name: str) -> Any:
    raise _malformed(f"{name} is not JSON: numbers must be finite")


def _float(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise _malformed(f"number {text[:32]} is out of range")
    if value.is_integer() and abs(value) < 2**63:
        return int(value)  # JSON Schema counts 5.0 as an integer; float fields take ints too
    return value


def nesting_depth(raw: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep brackets nest outside strings, counted up to ``limit + 1``. Each pass of a C-speed
    regex removes exactly the innermost empty pairs, so the passes count the levels."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    depth = 0
    while brackets and depth <= limit:
        shorter = _EMPTY_PAIR.sub(b"", brackets)
        if shorter == brackets:  # unbalanced: the parser will say where
            break
        brackets = shorter
        depth += 1
    return depth


def loads(raw: bytes | str) -> Any:
    """Parse strictly; every failure is a 400 ``malformed_json`` saying where."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nesting_depth(data) > MAX_DEPTH:
        raise _malformed(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data, parse_constant=_constant, parse_float=_float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = getattr(exc, "pos", None)
        raise _malformed(f"malformed JSON{f' at position {position}' if position is not None else ''}") from exc
    except (RecursionError, ValueError) as exc:
        raise _malformed(f"malformed JSON: {exc}") from exc


def dumps(data: Any) -> str:
    """Serialise an answer as valid JSON (a non-finite float would not be)."""
    return json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)
