"""A small versioned schema: each migration runs once, in order, inside a transaction.

A migration is a function of a synchronous SQLAlchemy connection, so the same code runs on
SQLite and PostgreSQL. Add new ones at the end; never edit one that has shipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from gateway.store import tables

Migration = Callable[[sa.Connection], None]


def _v1_initial(conn: sa.Connection) -> None:
    for table in (tables.rooms, tables.api_keys, tables.files, tables.tasks):
        table.create(conn, checkfirst=True)


def _recordings(conn: sa.Connection) -> None:
    """Recorded files, listed by GET /v1/recordings (also after a restart)."""
    tables.recordings.create(conn, checkfirst=True)


def _sip_tables(conn: sa.Connection) -> None:
    for table in (tables.sip_gates, tables.sip_accounts, tables.sip_routes):
        table.create(conn, checkfirst=True)


MIGRATIONS: list[Migration] = [_v1_initial, _recordings, _sip_tables]


def current_version(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return conn.execute(sa.select(sa.func.max(tables.schema_version.c.version))).scalar() or 0


def upgrade(conn: sa.Connection) -> int:
    """Apply every pending migration; return the resulting version."""
    tables.schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    for number, migration in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        migration(conn)
        conn.execute(tables.schema_version.insert().values(version=number, applied_at=time.time()))
        version = number
    return version
