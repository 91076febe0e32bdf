"""Webhook delivery against real aiohttp servers; the retry clock is fake, so times are exact."""

from __future__ import annotations

import asyncio
import json

import pytest
from structlog.testing import capture_logs

from gateway.events import Event
from plugins.webhook import sign, verify
from plugins.webhook.delivery import RetryPolicy

KEY = "s3cret-key"


def ev(name: str = "room.created", room: str | None = "r1", **data: object) -> Event:
    return Event(name, room, dict(data))


async def test_posts_exact_json_signed_with_headers(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url], key=KEY)
    event = ev("participant.joined", user="Zoë", n=1)

    plugin.mediagate_event(event, plugin.node)
    await plugin.join()

    [got] = rx.requests
    assert got.body == event.to_json().encode()
    assert json.loads(got.body) == event.to_dict()
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Mediagate-Signature"] == sign(KEY, got.body)
    assert verify(KEY, got.body, got.headers["X-Mediagate-Signature"])
    assert got.headers["X-Mediagate-Event"] == "participant.joined"
    assert got.headers["X-Mediagate-Delivery"] == event.id
    assert plugin.sender.delivered == 1


async def test_no_key_sends_no_signature(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url])
    plugin.mediagate_event(ev(), plugin.node)
    await plugin.join()
    [got] = rx.requests
    assert "X-Mediagate-Signature" not in got.headers
    assert got.headers["X-Mediagate-Event"] == "room.created"


async def test_two_failures_then_success(make_receiver, make_plugin, clock) -> None:
    rx = await make_receiver(script=[500, 500], default=200)
    plugin = await make_plugin(urls=[rx.url], key=KEY)
    event = ev()

    plugin.mediagate_event(event, plugin.node)
    await plugin.join()

    assert rx.times == [0, 0, 10]  # first attempt, immediate retry, one interval later
    assert [r.status for r in rx.requests] == [500, 500, 200]
    assert {r.body for r in rx.requests} == {event.to_json().encode()}
    assert clock.sleeps == [10]
    assert (plugin.sender.delivered, plugin.sender.gave_up) == (1, 0)


async def test_never_2xx_gives_up_after_60_s(make_receiver, make_plugin) -> None:
    rx = await make_receiver(default=500)
    plugin = await make_plugin(urls=[rx.url], key=KEY)
    event = ev()

    with capture_logs() as logs:
        plugin.mediagate_event(event, plugin.node)
        await plugin.join()

    assert rx.times == [0, 0, 10, 20, 30, 40, 50, 60]
    assert (plugin.sender.delivered, plugin.sender.gave_up) == (0, 1)
    [gave_up] = [entry for entry in logs if entry["event"] == "webhook delivery gave up"]
    assert gave_up["log_level"] == "warning"
    assert gave_up["delivery"] == event.id and gave_up["attempts"] == 8 and gave_up["error"] == "HTTP 500"
    assert KEY not in repr(logs)


async def test_schedule_follows_config(make_receiver, make_plugin) -> None:
    rx = await make_receiver(default=503)
    plugin = await make_plugin(urls=[rx.url], retry_interval_s=15, give_up_after_s=40)
    plugin.mediagate_event(ev(), plugin.node)
    await plugin.join()
    assert rx.times == [0, 0, 15, 30]


async def test_redirect_is_a_failure(make_receiver, make_plugin) -> None:
    rx = await make_receiver(script=[302], default=200)
    plugin = await make_plugin(urls=[rx.url])
    plugin.mediagate_event(ev(), plugin.node)
    await plugin.join()
    assert [r.status for r in rx.requests] == [302, 200]


async def test_timeout_counts_as_failure(make_receiver, make_plugin) -> None:
    rx = await make_receiver(script=["hang"], default=200)
    plugin = await make_plugin(urls=[rx.url], timeout_s=0.2)

    plugin.mediagate_event(ev(), plugin.node)
    await plugin.join()

    assert len(rx.requests) == 2  # the hung attempt, then the immediate retry
    assert rx.times == [0, 0]
    assert (plugin.sender.delivered, plugin.sender.gave_up) == (1, 0)


async def test_unreachable_url_retries_then_gives_up(make_plugin) -> None:
    # port 1 on loopback refuses connections: a network error is a failed attempt too
    plugin = await make_plugin(urls=["http://127.0.0.1:1/hook"])
    plugin.mediagate_event(ev(), plugin.node)
    await plugin.join()
    assert (plugin.sender.delivered, plugin.sender.gave_up) == (0, 1)


async def test_events_filter(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url], events=["room.*"])
    for name in ["room.created", "participant.joined", "room.updated", "egress.started", "room.closed"]:
        plugin.mediagate_event(ev(name), plugin.node)
    await plugin.join()
    assert [r.headers["X-Mediagate-Event"] for r in rx.requests] == ["room.created", "room.updated", "room.closed"]


async def test_several_patterns_and_exact_names(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url], events=["egress.*", "participant.left"])
    for name in ["participant.joined", "participant.left", "egress.file", "room.closed"]:
        plugin.mediagate_event(ev(name), plugin.node)
    await plugin.join()
    assert [r.headers["X-Mediagate-Event"] for r in rx.requests] == ["participant.left", "egress.file"]


async def test_dead_url_does_not_delay_healthy_one(make_receiver, make_plugin) -> None:
    dead = await make_receiver(default="hang")
    healthy = await make_receiver()
    plugin = await make_plugin(urls=[dead.url, healthy.url], timeout_s=3600)
    events = [ev(room="r1", n=i) for i in range(3)]

    for event in events:
        plugin.mediagate_event(event, plugin.node)
    await healthy.wait_accepted(3)

    assert [r.body for r in healthy.accepted] == [e.to_json().encode() for e in events]
    assert len(dead.requests) == 1  # still waiting on its first answer
    assert plugin.sender.pending == 3  # one in flight and two queued, all for the dead URL


async def test_order_per_room_kept_while_one_event_retries(make_receiver, make_plugin) -> None:
    rx = await make_receiver(script=[500], default=200)  # the very first POST fails once
    plugin = await make_plugin(urls=[rx.url])
    events = [ev(room=f"room{i % 3}", n=i) for i in range(12)]

    for event in events:
        plugin.mediagate_event(event, plugin.node)
    await plugin.join()

    got = [json.loads(r.body) for r in rx.accepted]
    assert sorted(e["id"] for e in got) == sorted(e.id for e in events)
    for room in ("room0", "room1", "room2"):
        assert [e["data"]["n"] for e in got if e["room_id"] == room] == [
            e.data["n"] for e in events if e.room_id == room]


async def test_queue_is_bounded_and_drops_oldest(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url], max_queue=2)
    events = [ev(n=i) for i in range(5)]

    with capture_logs() as logs:
        for event in events:  # no await in between: nothing is sent yet
            plugin.mediagate_event(event, plugin.node)
        assert plugin.sender.pending == 2
        await plugin.join()

    assert plugin.sender.dropped == 3
    assert [r.body for r in rx.requests] == [e.to_json().encode() for e in events[3:]]
    drops = [entry for entry in logs if entry["event"] == "webhook queue full, dropping oldest event"]
    assert drops[0]["log_level"] == "warning" and drops[0]["dropped"] == 1


async def test_drops_oldest_across_rooms(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(urls=[rx.url], max_queue=3)
    events = [ev(room=f"room{i}", n=i) for i in range(6)]
    for event in events:
        plugin.mediagate_event(event, plugin.node)
    await plugin.join()
    assert sorted(json.loads(r.body)["data"]["n"] for r in rx.requests) == [3, 4, 5]


async def test_deliver_to_callback_url(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    # no configured URLs and a filter the event doesn't match: deliver() is explicit
    plugin = await make_plugin(key=KEY, events=["room.*"])
    signed, default_key, unsigned = ev("egress.ended"), ev("egress.file"), ev("ingress.ended")

    plugin.mediagate_event(ev("room.created"), plugin.node)  # idle: no URLs configured
    plugin.deliver(rx.url, signed, key="task-key")
    plugin.deliver(rx.url, default_key)
    plugin.deliver(rx.url, unsigned, key="")
    await plugin.join()

    a, b, c = rx.requests
    assert a.body == signed.to_json().encode() and verify("task-key", a.body, a.headers["X-Mediagate-Signature"])
    assert verify(KEY, b.body, b.headers["X-Mediagate-Signature"])
    assert "X-Mediagate-Signature" not in c.headers


async def test_deliver_retries_like_webhooks(make_receiver, make_plugin) -> None:
    rx = await make_receiver(script=[500, 500, 500], default=204)
    plugin = await make_plugin()
    plugin.deliver(rx.url, ev("egress.status"))
    await plugin.join()
    assert rx.times == [0, 0, 10, 20]


async def test_deliver_rejects_non_http_url(make_plugin) -> None:
    plugin = await make_plugin()
    with pytest.raises(ValueError):
        plugin.deliver("ftp://example.com/x", ev())
    with pytest.raises(ValueError):
        plugin.deliver("/relative", ev())


async def test_deliver_from_another_thread(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin()
    event = ev()
    await asyncio.to_thread(plugin.deliver, rx.url, event)
    await rx.wait_accepted(1)
    assert rx.requests[0].body == event.to_json().encode()


async def test_events_before_startup_are_sent_after_it(make_receiver, make_plugin) -> None:
    rx = await make_receiver()
    plugin = await make_plugin(start=False, urls=[rx.url])
    event = ev()
    plugin.mediagate_event(event, plugin.node)
    assert plugin.sender.pending == 1 and not rx.requests
    await plugin.mediagate_startup(plugin.node)
    await plugin.join()
    assert [r.body for r in rx.requests] == [event.to_json().encode()]


async def test_shutdown_cancels_retries_and_ignores_later_events(make_receiver, make_plugin, clock) -> None:
    rx = await make_receiver(default=500)
    plugin = await make_plugin(urls=[rx.url])
    clock.paused = True  # the delivery parks in its wait before the third attempt
    plugin.mediagate_event(ev(), plugin.node)
    while len(rx.requests) < 2:
        await asyncio.sleep(0.005)
    assert plugin.sender.pending == 1

    await plugin.mediagate_shutdown(plugin.node)
    await plugin.join()  # returns at once: nothing left running
    plugin.mediagate_event(ev(), plugin.node)
    assert plugin.sender.pending == 0
    assert len(rx.requests) == 2


@pytest.mark.parametrize(
    ("now", "attempts", "last_slot", "expected"),
    [
        (0, 1, 0, (0, 0)),  # immediate retry
        (0, 2, 0, (1, 10)),
        (10, 3, 1, (2, 20)),
        (50, 7, 5, (6, 60)),  # an attempt exactly at give_up_after_s is still made
        (60, 8, 6, None),
        (25, 3, 1, (3, 30)),  # slow attempts: a passed slot is skipped, not fired late
        (9.999, 3, 1, (2, 20)),  # a sleep that woke early never reuses a slot
        (5, 2, 0, (1, 10)),  # the first attempt timed out at 5 s, the retry failed at once
        (10.01, 2, 0, (2, 20)),  # both timed out: slot 1 has passed
    ],
)
def test_retry_policy(now: float, attempts: int, last_slot: int, expected: tuple[int, float] | None) -> None:
    assert RetryPolicy(5, 10, 60).next_attempt(0, now, attempts, last_slot) == expected
