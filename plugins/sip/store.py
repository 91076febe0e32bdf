"""The SIP tables (gates, accounts, routes) behind small repositories."""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from gateway.errors import Conflict, NotFound
from gateway.store import tables

Row = dict[str, Any]


class Repo:
    def __init__(self, engine: Any, table: sa.Table, key: str, prefix: str, what: str) -> None:
        self.engine, self.table, self.key, self.prefix, self.what = engine, table, key, prefix, what

    async def create(self, values: Row) -> Row:
        row = {self.key: f"{self.prefix}{uuid.uuid4().hex[:10]}", "created_at": time.time(), **values}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(self.table.insert().values(**row))
        except IntegrityError as exc:
            raise Conflict(f"{self.what} exists", code=f"{self.what}_exists") from exc
        return row

    async def get(self, key: str) -> Row:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(self.table).where(self.table.c[self.key] == key))).mappings().first()
        if row is None:
            raise NotFound(f"no such {self.what} {key!r}", code=f"{self.what}_not_found", field=self.key)
        return dict(row)

    async def list(self) -> list[Row]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(self.table).order_by(self.table.c.created_at))).mappings().all()
        return [dict(r) for r in rows]

    async def update(self, key: str, changes: Row) -> Row:
        await self.get(key)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(self.table.update().where(self.table.c[self.key] == key).values(**changes))
        except IntegrityError as exc:
            raise Conflict(f"{self.what} exists", code=f"{self.what}_exists") from exc
        return await self.get(key)

    async def delete(self, key: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(self.table.delete().where(self.table.c[self.key] == key))
        if not result.rowcount:
            raise NotFound(f"no such {self.what} {key!r}", code=f"{self.what}_not_found", field=self.key)


class SipStore:
    def __init__(self, engine: Any) -> None:
        self.gates = Repo(engine, tables.sip_gates, "gate_id", "GT_", "gate")
        self.accounts = Repo(engine, tables.sip_accounts, "account_id", "AC_", "account")
        self.routes = Repo(engine, tables.sip_routes, "route_id", "RT_", "route")
