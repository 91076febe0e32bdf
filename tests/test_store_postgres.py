"""The store on a real PostgreSQL server (a private cluster started for the test on loopback):
the same migrations and queries as SQLite, and a node that keeps its rooms across restarts."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import load_config
from gateway.errors import Conflict
from gateway.node import Node
from gateway.rooms.models import RoomCreate
from gateway.store import Store
from tests.e2e.helpers import free_port

pytestmark = pytest.mark.e2e


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"{name} not found: the test command installs the Debian package postgresql"
    return found[-1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway cluster owned by the postgres user, listening on 127.0.0.1 only."""
    base = tempfile.mkdtemp(prefix="mediagate-pg-")
    os.chmod(base, 0o755)
    data = os.path.join(base, "data")
    shutil.chown(base, "postgres", "postgres")
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, _bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    port = free_port()
    subprocess.run([*run_as, _bin("pg_ctl"), "-D", data, "-w", "-l", os.path.join(base, "log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, _bin("pg_ctl"), "-D", data, "-w", "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


async def test_store_on_postgres(postgres_url: str) -> None:
    store = Store(postgres_url)
    await store.open()
    assert store.schema_version >= 1
    await store.open()  # migrations are applied once
    await store.create_room({"room_id": "pg-room", "topic": "t", "settings": {"a": 1}})
    with pytest.raises(Conflict):
        await store.create_room({"room_id": "pg-room"})
    row = await store.get_room("pg-room")
    assert row is not None and row["settings"] == {"a": 1}
    assert await store.update_room("pg-room", {"topic": "changed"})
    assert (await store.get_room("pg-room"))["topic"] == "changed"
    await store.add_task({"task_id": "T1", "kind": "egress", "room_id": "pg-room", "status": "active",
                          "spec": {"kind": "record"}, "result": {}})
    assert [t["task_id"] for t in await store.list_tasks(room_id="pg-room")] == ["T1"]
    assert await store.delete_room("pg-room")
    assert await store.ping()
    await store.close()


async def test_node_keeps_rooms_on_postgres_across_restarts(postgres_url: str, tmp_path: Any) -> None:
    def config():
        return load_config(None, overrides=[f'node.data_dir="{tmp_path}"', f'store.url="{postgres_url}"',
                                            "auth.bootstrap_key=false", 'log.level="warning"'], environ={})

    node = Node(config())
    await node.start()
    await node.rooms.create(RoomCreate(room_id="persist", topic="kept"))
    await node.stop()
    again = Node(config())
    await again.start()
    try:
        room = await again.rooms.get("persist")
        assert room.record["topic"] == "kept"
    finally:
        await again.rooms.delete("persist")
        await again.stop()
