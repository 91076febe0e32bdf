"""The ``mediagate`` command: serve, token, keys, version, and inspection of a running node."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway import __version__
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.logsetup import configure_logging


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("MEDIAGATE_CONFIG")
    return load_config(path, overrides=args.set)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="TOML config file (default: built-in defaults; env MEDIAGATE_CONFIG)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set http.port=9000")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediagate", description="Self-hosted media gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    _add_config_args(serve)

    token = sub.add_parser("token", help="print a token signed with this node's secret")
    _add_config_args(token)
    token.add_argument("--room", help="room id: print a join token for one participant")
    token.add_argument("--identity", help="participant identity (with --room)")
    token.add_argument("--name", help="participant display name (with --room)")
    token.add_argument("--permissions", type=lambda v: int(v, 0), default=None,
                       help="permission bits, e.g. 254 or 0xFE (with --room)")
    token.add_argument("--access-key", help="print an API token for this access key (default: any key)")
    token.add_argument("--ttl", type=int, default=None,
                       help="lifetime in seconds (> 0; at most auth.max_token_ttl_s, longer is cut to it)")

    keys = sub.add_parser("keys", help="manage API keys stored in the node's database")
    _add_config_args(keys)
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("access_key", nargs="?", help="the key to revoke")
    keys.add_argument("--name", default="", help="a label for a new key")

    sub.add_parser("version", help="print the version")

    config = sub.add_parser("config", help="validate a config file and print the effective configuration")
    _add_config_args(config)

    for name, help_text in (("status", "health, readiness and node load of a running node"),
                            ("rooms", "rooms and participants on a running node"),
                            ("egress", "egress tasks of a room on a running node")):
        inspect = sub.add_parser(name, help=help_text)
        inspect.add_argument("--url", default=os.environ.get("MEDIAGATE_URL", "http://127.0.0.1:8080"))
        inspect.add_argument("--token", default=os.environ.get("MEDIAGATE_TOKEN"),
                             help="API token (env MEDIAGATE_TOKEN)")
        if name == "egress":
            inspect.add_argument("room_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"mediagate {__version__}")
            return 0
        if args.command in ("status", "rooms", "egress"):
            return _inspect(args)
        config = _config(args)
        configure_logging(config.log.level, config.log.format)
        if args.command == "serve":
            return _serve(config)
        if args.command == "token":
            return asyncio.run(_token(config, args))
        if args.command == "keys":
            return asyncio.run(_keys(config, args))
        if args.command == "config":
            from gateway.pluginmanager import PluginManager

            PluginManager().load(config)  # plugin sections are checked exactly as `serve` checks them
            data = config.model_dump(mode="json")
            if data["auth"]["api_keys"]:
                data["auth"]["api_keys"] = {k: "***" for k in data["auth"]["api_keys"]}
            data["auth"]["jwt_secret"] = "***" if data["auth"]["jwt_secret"] else ""
            print(json.dumps(data, indent=2))
            return 0
    except ConfigError as exc:
        print(f"mediagate: configuration error: {exc}", file=sys.stderr)
        return 2
    return 1


def _serve(config: Config) -> int:
    from gateway.node import Node

    async def run() -> None:
        node = Node(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        url = await node.serve()
        # a token only on the first start (with the new key): later starts must not put a fresh
        # operator credential into the journal; `mediagate token` prints one on request
        token = (await _any_api_token(node))[0] if node.bootstrap_credentials else None
        _banner(node, url, token)
        try:
            await stop.wait()
        finally:
            await node.stop()

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"mediagate: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mediagate: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


async def _any_api_token(node: Any, ttl: int | None = None) -> tuple[str | None, str | None]:
    """An API token for the first usable key: configured, bootstrap, or the oldest stored key."""
    keys = list(node.config.auth.api_keys)
    if not keys and node.bootstrap_credentials:
        keys = [node.bootstrap_credentials[0]]
    if not keys:
        keys = [row["access_key"] for row in await node.store.list_api_keys() if not row["revoked"]]
    if not keys:
        return None, None
    token, _ = node.tokens.api_token(keys[0], ttl or node.config.auth.token_ttl_s)
    return token, keys[0]


def _banner(node: Any, url: str, token: str | None) -> None:
    urls = [url] + [u for u in getattr(node, "urls", []) if u != url]
    lines = [f"mediagate {__version__} is serving on {url}"]
    lines += [f"  also on    {other}" for other in urls[1:]]
    lines.append(f"  API docs:  {url}/docs")
    if node.bootstrap_credentials:
        access, secret = node.bootstrap_credentials
        key_file = node.config.node.data_dir / "bootstrap-key.txt"
        lines += [f"  A first API key was created (kept in {key_file}, shown once here):",
                  f"    access_key = {access}", f"    secret_key = {secret}"]
    if token:
        hours = node.config.auth.token_ttl_s / 3600
        lines += [f"  A ready-to-use API token (valid for {hours:g} h, shown on this first start only):",
                  f"    export TOKEN={token}"]
    else:
        lines.append("  An API token: mediagate token --config <this config>  (or POST /v1/auth/token)")
    print("\n".join(lines), flush=True)


def _ttl(args: argparse.Namespace, default: int, maximum: int) -> int:
    """--ttl: a positive number of seconds, cut to auth.max_token_ttl_s like the API does."""
    if args.ttl is None:
        return min(default, maximum)
    if args.ttl <= 0:
        raise ConfigError(f"--ttl must be a positive number of seconds, got {args.ttl}")
    if args.ttl > maximum:
        print(f"mediagate: --ttl {args.ttl} is above auth.max_token_ttl_s; the token lives {maximum} s",
              file=sys.stderr)
    return min(args.ttl, maximum)


async def _token(config: Config, args: argparse.Namespace) -> int:
    from gateway.node import Node

    node = Node(config)
    await node.store.open()
    from gateway.security import DEFAULT_JOIN_PERMISSIONS, TokenService, load_or_create_secret

    node.tokens = TokenService(load_or_create_secret(config.auth.jwt_secret, config.node.data_dir))
    try:
        maximum = config.auth.max_token_ttl_s
        if args.room:
            if not args.identity:
                print("mediagate: --identity is required with --room", file=sys.stderr)
                return 2
            perms = DEFAULT_JOIN_PERMISSIONS if args.permissions is None else args.permissions
            token, _ = node.tokens.join_token(args.room, args.identity, name=args.name, permissions=perms,
                                              ttl_s=_ttl(args, config.auth.join_token_ttl_s, maximum))
        elif args.access_key:
            ttl = _ttl(args, config.auth.token_ttl_s, maximum)
            if not await node.keys.is_active(args.access_key):
                print(f"mediagate: no active API key {args.access_key!r}", file=sys.stderr)
                return 1
            token, _ = node.tokens.api_token(args.access_key, ttl)
        else:
            token, _key = await _any_api_token(node, _ttl(args, config.auth.token_ttl_s, maximum))
            if token is None:
                print("mediagate: no API key exists yet; run `mediagate keys create` or start the node once",
                      file=sys.stderr)
                return 1
        print(token)
        return 0
    finally:
        await node.store.close()


async def _keys(config: Config, args: argparse.Namespace) -> int:
    from gateway.keys import KeyRing
    from gateway.store import Store

    store = Store(config.store_url, sqlite_wal=config.store.sqlite_wal)
    await store.open()
    try:
        ring = KeyRing(store, config.auth.api_keys)
        if args.action == "create":
            access, secret = await ring.create(args.name)
            print(f"access_key = {access}\nsecret_key = {secret}")
        elif args.action == "list":
            for key in config.auth.api_keys:
                print(f"{key}\t(config file)")
            for row in await store.list_api_keys():
                print(f"{row['access_key']}\t{row['name']}\t{'revoked' if row['revoked'] else 'active'}")
        else:
            if not args.access_key or not await ring.revoke(args.access_key):
                print("mediagate: no such stored key", file=sys.stderr)
                return 1
            print(f"revoked {args.access_key}")
        return 0
    finally:
        await store.close()


def _get(url: str, token: str | None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _inspect(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    try:
        if args.command == "status":
            out = {"health": _get(base + "/healthz", None)}
            try:
                out["ready"] = _get(base + "/readyz", None)
            except urllib.error.HTTPError as exc:
                out["ready"] = json.loads(exc.read())
            if args.token:
                out["nodes"] = _get(base + "/v1/nodes", args.token)["nodes"]
        elif args.command == "rooms":
            out = _get(base + "/v1/rooms", args.token)
        else:
            out = _get(base + f"/v1/rooms/{args.room_id}/egress", args.token)
    except urllib.error.HTTPError as exc:
        print(f"mediagate: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"mediagate: cannot reach {base}: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0
