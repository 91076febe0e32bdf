"""The persistent store on a temporary SQLite database: migrations, rooms, API keys, files, tasks."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import Conflict
from gateway.keys import KeyRing
from gateway.security import verify_secret
from gateway.store import Store
from gateway.store.migrations import MIGRATIONS


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.as_posix()}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(url(tmp_path / "nested" / "dir" / "store.db"))  # parent directories are created
    await opened.open()
    yield opened
    await opened.close()


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_migrations_apply_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = Store(url(path))
    await first.open()
    assert first.schema_version == len(MIGRATIONS)
    await first.create_room({"room_id": "kept", "topic": "t", "settings": {}})
    await first.close()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "rooms", "api_keys", "files", "tasks", "recordings", "sip_gates"} <= tables
    assert versions(path) == list(range(1, len(MIGRATIONS) + 1))
    again = Store(url(path))
    await again.open()  # a no-op: nothing re-applied, data intact
    assert again.schema_version == len(MIGRATIONS)
    assert (await again.get_room("kept"))["topic"] == "t"
    await again.close()
    assert versions(path) == list(range(1, len(MIGRATIONS) + 1))


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_room_crud(store: Store) -> None:
    row = await store.create_room({"room_id": "r1", "topic": "hello", "owner_id": "boss", "max_participants": 4,
                                   "locked": False, "settings": {"empty_timeout_s": 10, "metadata": {"k": "中文"}},
                                   "layout": {"template": "grid"}})
    assert row["status"] == "open" and row["created_at"] == row["updated_at"]
    got = await store.get_room("r1")
    assert got is not None
    assert (got["topic"], got["owner_id"], got["max_participants"], got["locked"]) == ("hello", "boss", 4, False)
    assert got["settings"] == {"empty_timeout_s": 10, "metadata": {"k": "中文"}}
    assert got["layout"] == {"template": "grid"} and got["password_hash"] is None and got["closed_at"] is None
    await store.create_room({"room_id": "r2", "settings": {}})
    assert [r["room_id"] for r in await store.list_rooms()] == ["r1", "r2"]

    assert await store.update_room("r1", {"topic": "changed", "locked": True, "settings": {"a": 1}}) is True
    got = await store.get_room("r1")
    assert (got["topic"], got["locked"], got["settings"]) == ("changed", True, {"a": 1})
    assert got["updated_at"] >= got["created_at"]
    assert await store.update_room("missing", {"topic": "x"}) is False

    assert await store.update_room("r2", {"status": "closed", "closed_at": 123.0}) is True
    assert [r["room_id"] for r in await store.list_rooms()] == ["r1"]  # open only by default
    assert [r["room_id"] for r in await store.list_rooms("closed")] == ["r2"]
    assert [r["room_id"] for r in await store.list_rooms(None)] == ["r1", "r2"]

    assert await store.delete_room("r1") is True
    assert await store.get_room("r1") is None
    assert await store.delete_room("r1") is False


async def test_duplicate_room_is_conflict(store: Store) -> None:
    await store.create_room({"room_id": "dup", "topic": "first", "settings": {}})
    with pytest.raises(Conflict) as info:
        await store.create_room({"room_id": "dup", "topic": "second", "settings": {}})
    assert info.value.code == "room_exists" and info.value.status == 409
    assert (await store.get_room("dup"))["topic"] == "first"


async def test_api_keys_are_hashed(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    store = Store(url(path))
    await store.open()
    ring = KeyRing(store, {})
    access, secret = await ring.create("ci")
    assert await ring.count() == 1
    await ring.verify(access, secret)  # no exception: accepted
    row = await store.get_api_key(access)
    assert row is not None and row["name"] == "ci" and row["revoked"] is False
    assert row["secret_hash"].startswith("scrypt$") and secret not in row["secret_hash"]
    assert verify_secret(secret, row["secret_hash"]) and not verify_secret(secret + "x", row["secret_hash"])
    await store.close()
    raw = path.read_bytes()
    for suffix in ("-wal", "-journal"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            raw += extra.read_bytes()
    assert access.encode() in raw
    assert secret.encode() not in raw


async def test_api_key_duplicate_and_revoke(store: Store) -> None:
    await store.add_api_key("AK1", "scrypt$x$y", "one")
    with pytest.raises(Conflict) as info:
        await store.add_api_key("AK1", "scrypt$x$z", "again")
    assert info.value.code == "api_key_exists"
    await store.add_api_key("AK2", "scrypt$x$y")
    assert [r["access_key"] for r in await store.list_api_keys()] == ["AK1", "AK2"]
    assert await store.revoke_api_key("AK1") is True
    assert (await store.get_api_key("AK1"))["revoked"] is True
    assert await store.revoke_api_key("nope") is False
    assert await store.get_api_key("nope") is None


async def test_revoked_key_is_refused(store: Store) -> None:
    from gateway.errors import Unauthorized

    ring = KeyRing(store, {})
    access, secret = await ring.create()
    await store.revoke_api_key(access)
    with pytest.raises(Unauthorized) as info:
        await ring.verify(access, secret)
    assert info.value.code == "invalid_credentials"
    assert await ring.count() == 0


async def test_files(store: Store) -> None:
    values = {"file_id": "FI_1", "name": "a.png", "ext": "png", "content_type": "image/png", "size": 10,
              "sha256": "0" * 64, "storage_key": "FI_1.png", "media_info": {"width": 2}, "owner": "ak"}
    await store.add_file(values)
    await store.add_file({**values, "file_id": "FI_2", "storage_key": "FI_2.png"})
    got = await store.get_file("FI_1")
    assert got["media_info"] == {"width": 2} and got["size"] == 10
    assert {r["file_id"] for r in await store.list_files()} == {"FI_1", "FI_2"}
    with pytest.raises(Conflict):
        await store.add_file(values)
    assert await store.delete_file("FI_1") is True
    assert await store.get_file("FI_1") is None
    assert await store.delete_file("FI_1") is False


async def test_tasks(store: Store) -> None:
    await store.add_task({"task_id": "EG_1", "kind": "egress", "room_id": "r1", "status": "starting",
                          "spec": {"kind": "rtmp", "urls": ["rtmp://x/y"]}, "result": {}, "node_id": "n"})
    await store.add_task({"task_id": "IN_1", "kind": "ingress", "room_id": "r1", "status": "publishing",
                          "spec": {}, "result": {}})
    await store.add_task({"task_id": "EG_2", "kind": "egress", "room_id": "r2", "status": "starting",
                          "spec": {}, "result": {}})
    with pytest.raises(Conflict):
        await store.add_task({"task_id": "EG_1", "kind": "egress", "status": "x", "spec": {}, "result": {}})
    task = await store.get_task("EG_1")
    assert task["spec"] == {"kind": "rtmp", "urls": ["rtmp://x/y"]} and task["ended_at"] is None
    assert [t["task_id"] for t in await store.list_tasks()] == ["EG_1", "IN_1", "EG_2"]
    assert [t["task_id"] for t in await store.list_tasks(kind="egress")] == ["EG_1", "EG_2"]
    assert [t["task_id"] for t in await store.list_tasks(room_id="r1")] == ["EG_1", "IN_1"]
    assert [t["task_id"] for t in await store.list_tasks(kind="egress", room_id="r2")] == ["EG_2"]
    assert await store.update_task("EG_1", {"status": "complete", "result": {"files": ["a.mp4"]},
                                            "ended_at": 5.0}) is True
    task = await store.get_task("EG_1")
    assert (task["status"], task["result"], task["ended_at"]) == ("complete", {"files": ["a.mp4"]}, 5.0)
    assert await store.update_task("nope", {"status": "x"}) is False
    assert await store.get_task("nope") is None
