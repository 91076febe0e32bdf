"""Inbound routing: which room a dialled number goes to, or a PIN prompt first.

Order: the ``mediagate_sip_route`` hook (a plugin may route or reject), then the rules of
``/v1/sip/routes`` (exact numbers before patterns, then by priority), then the caller's
account default room, then a room whose id is the number.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any


@dataclass
class RouteRule:
    route_id: str
    match: str  # a number, a glob ("12*"), or a regular expression starting with ^
    room_id: str | None = None
    pin: str | None = None
    priority: int = 0

    def matches(self, number: str) -> bool:
        if self.match.startswith("^"):
            try:
                return re.fullmatch(self.match, number) is not None
            except re.error:
                return False
        if any(c in self.match for c in "*?["):
            return fnmatch.fnmatchcase(number, self.match)
        return number == self.match

    @property
    def exact(self) -> bool:
        return not self.match.startswith("^") and not any(c in self.match for c in "*?[")


@dataclass
class Decision:
    room_id: str | None = None
    pin: str | None = None
    reject: int | None = None
    source: str = ""


def pick(rules: list[RouteRule], number: str) -> RouteRule | None:
    found = [r for r in rules if r.matches(number)]
    if not found:
        return None
    found.sort(key=lambda r: (not r.exact, -r.priority))
    return found[0]


def from_hook(answer: dict[str, Any] | None) -> Decision | None:
    if not answer:
        return None
    if answer.get("reject"):
        status = int(answer["reject"])
        return Decision(reject=status if 300 <= status <= 699 else 403, source="hook")
    if answer.get("room_id"):
        return Decision(room_id=str(answer["room_id"]), pin=answer.get("pin"), source="hook")
    return None
