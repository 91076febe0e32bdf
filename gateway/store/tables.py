"""Table definitions (SQLAlchemy Core). Later issues add tables through new migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)

rooms = sa.Table(
    "rooms", metadata,
    sa.Column("room_id", sa.String(64), primary_key=True),
    sa.Column("topic", sa.String(256), nullable=False, default=""),
    sa.Column("owner_id", sa.String(128)),
    sa.Column("host_id", sa.String(128)),
    sa.Column("password_hash", sa.String(256)),
    sa.Column("max_participants", sa.Integer, nullable=False, default=0),
    sa.Column("locked", sa.Boolean, nullable=False, default=False),
    sa.Column("settings", sa.JSON, nullable=False, default=dict),  # the remaining room options
    sa.Column("layout", sa.JSON),
    sa.Column("status", sa.String(16), nullable=False, default="open"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("access_key", sa.String(128), primary_key=True),
    sa.Column("secret_hash", sa.String(256), nullable=False),
    sa.Column("name", sa.String(128), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)

files = sa.Table(
    "files", metadata,
    sa.Column("file_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("ext", sa.String(16), nullable=False),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("storage_key", sa.String(1024), nullable=False),
    sa.Column("media_info", sa.JSON),
    sa.Column("owner", sa.String(128)),
    sa.Column("created_at", sa.Float, nullable=False),
)

tasks = sa.Table(
    "tasks", metadata,
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),  # egress, ingress, sip_call, upload
    sa.Column("room_id", sa.String(64), index=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False, default=dict),
    sa.Column("result", sa.JSON, nullable=False, default=dict),
    sa.Column("node_id", sa.String(128)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
)

recordings = sa.Table(
    "recordings", metadata,
    sa.Column("recording_id", sa.String(64), primary_key=True),
    sa.Column("egress_id", sa.String(64), nullable=False, index=True),
    sa.Column("room_id", sa.String(64), nullable=False, index=True),
    sa.Column("participant_id", sa.String(128)),
    sa.Column("filename", sa.String(1024), nullable=False),  # the storage key
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False, default=0),
    sa.Column("duration_s", sa.Float, nullable=False, default=0.0),
    sa.Column("started_at", sa.Float, nullable=False, index=True),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("url", sa.String(2048)),
    sa.Column("upload", sa.String(16), nullable=False, default="pending"),  # pending, done, failed
    sa.Column("meta", sa.JSON, nullable=False, default=dict),
)

# SIP edge (plugins/sip): trunks, phones that register, inbound routing rules
sip_gates = sa.Table(
    "sip_gates", metadata,
    sa.Column("gate_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("config", sa.JSON, nullable=False, default=dict),  # host, port, transport, register, ...
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

sip_accounts = sa.Table(
    "sip_accounts", metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), nullable=False, unique=True),
    sa.Column("config", sa.JSON, nullable=False, default=dict),  # password, codecs, default room, ...
    sa.Column("created_at", sa.Float, nullable=False),
)

sip_routes = sa.Table(
    "sip_routes", metadata,
    sa.Column("route_id", sa.String(64), primary_key=True),
    sa.Column("match", sa.String(128), nullable=False),
    sa.Column("config", sa.JSON, nullable=False, default=dict),  # room_id, pin, priority
    sa.Column("created_at", sa.Float, nullable=False),
)
