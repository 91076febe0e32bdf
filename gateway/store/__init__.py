"""Persistent state behind one interface: SQLite by default, PostgreSQL by URL.

Media runtime state (who is connected, tracks) lives in memory; this holds what must
survive a restart: rooms, API keys, files, tasks (and later SIP gates, accounts, routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway.errors import Conflict
from gateway.store import migrations, tables

Row = dict[str, Any]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Write-ahead log: readers never wait for a writer and a commit is one append, not a
    journal rewrite; NORMAL sync is safe with WAL (a power cut may lose the last commits, never
    corrupt); writers queue for up to 5 s instead of failing with 'database is locked'."""
    cursor = dbapi_connection.cursor()
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000"):
        cursor.execute(pragma)
    cursor.close()


class Store:
    def __init__(self, url: str, *, echo: bool = False, sqlite_wal: bool = True) -> None:
        self.url = url
        in_memory = True
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                in_memory = False
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, echo=echo)
        if url.startswith("sqlite") and sqlite_wal and not in_memory:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        # SQLite has one writer at a time: queue this process's writes here (FIFO, no polling)
        # rather than in SQLite's busy handler, which sleeps up to 100 ms between retries and
        # gives up after busy_timeout ("database is locked")
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if url.startswith("sqlite") else None
        self.schema_version = 0

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            self.schema_version = await conn.run_sync(migrations.upgrade)

    async def close(self) -> None:
        await self.engine.dispose()

    async def journal_mode(self) -> str:
        """SQLite's journal mode (``wal`` once enabled); empty for other databases."""
        if not self.url.startswith("sqlite"):
            return ""
        async with self.engine.connect() as conn:
            return str((await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()).lower()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    # ------------------------------------------------------------------ helpers
    async def _insert(self, table: sa.Table, values: Row, conflict: str) -> Row:
        try:
            async with self._writing() as conn:
                await conn.execute(table.insert().values(**values))
        except IntegrityError as exc:
            raise Conflict(conflict, code=f"{table.name[:-1]}_exists") from exc
        return values

    async def _one(self, query: sa.Select) -> Row | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row else None

    async def _all(self, query: sa.Select) -> list[Row]:
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def _update(self, table: sa.Table, key: sa.Column, value: str, changes: Row) -> bool:
        async with self._writing() as conn:
            result = await conn.execute(table.update().where(key == value).values(**changes))
        return result.rowcount > 0

    async def _delete(self, table: sa.Table, key: sa.Column, value: str) -> bool:
        async with self._writing() as conn:
            result = await conn.execute(table.delete().where(key == value))
        return result.rowcount > 0

    # ------------------------------------------------------------------ rooms
    async def create_room(self, values: Row) -> Row:
        now = time.time()
        values = {"created_at": now, "updated_at": now, "status": "open", **values}
        return await self._insert(tables.rooms, values, f"room {values['room_id']!r} already exists")

    async def get_room(self, room_id: str) -> Row | None:
        return await self._one(sa.select(tables.rooms).where(tables.rooms.c.room_id == room_id))

    async def list_rooms(self, status: str | None = "open") -> list[Row]:
        query = sa.select(tables.rooms).order_by(tables.rooms.c.created_at)
        if status:
            query = query.where(tables.rooms.c.status == status)
        return await self._all(query)

    async def update_room(self, room_id: str, changes: Row) -> bool:
        return await self._update(tables.rooms, tables.rooms.c.room_id, room_id,
                                  {**changes, "updated_at": time.time()})

    async def delete_room(self, room_id: str) -> bool:
        return await self._delete(tables.rooms, tables.rooms.c.room_id, room_id)

    # ------------------------------------------------------------------ API keys
    async def add_api_key(self, access_key: str, secret_hash: str, name: str = "") -> Row:
        return await self._insert(tables.api_keys, {"access_key": access_key, "secret_hash": secret_hash,
                                                    "name": name, "created_at": time.time(), "revoked": False},
                                  f"API key {access_key!r} already exists")

    async def get_api_key(self, access_key: str) -> Row | None:
        return await self._one(sa.select(tables.api_keys).where(tables.api_keys.c.access_key == access_key))

    async def list_api_keys(self) -> list[Row]:
        return await self._all(sa.select(tables.api_keys).order_by(tables.api_keys.c.created_at))

    async def revoke_api_key(self, access_key: str) -> bool:
        return await self._update(tables.api_keys, tables.api_keys.c.access_key, access_key, {"revoked": True})

    # ------------------------------------------------------------------ files
    async def add_file(self, values: Row) -> Row:
        return await self._insert(tables.files, {"created_at": time.time(), **values}, "file exists")

    async def get_file(self, file_id: str) -> Row | None:
        return await self._one(sa.select(tables.files).where(tables.files.c.file_id == file_id))

    async def list_files(self, limit: int = 1000) -> list[Row]:
        return await self._all(sa.select(tables.files).order_by(tables.files.c.created_at.desc()).limit(limit))

    async def delete_file(self, file_id: str) -> bool:
        return await self._delete(tables.files, tables.files.c.file_id, file_id)

    # ------------------------------------------------------------------ tasks
    async def add_task(self, values: Row) -> Row:
        now = time.time()
        return await self._insert(tables.tasks, {"created_at": now, "updated_at": now, **values}, "task exists")

    async def get_task(self, task_id: str) -> Row | None:
        return await self._one(sa.select(tables.tasks).where(tables.tasks.c.task_id == task_id))

    async def list_tasks(self, *, kind: str | None = None, room_id: str | None = None) -> list[Row]:
        query = sa.select(tables.tasks).order_by(tables.tasks.c.created_at)
        if kind:
            query = query.where(tables.tasks.c.kind == kind)
        if room_id:
            query = query.where(tables.tasks.c.room_id == room_id)
        return await self._all(query)

    async def update_task(self, task_id: str, changes: Row) -> bool:
        return await self._update(tables.tasks, tables.tasks.c.task_id, task_id,
                                  {**changes, "updated_at": time.time()})
