"""Configuration: TOML file, then environment variables, then ``--set`` overrides, validated once.

Precedence (later wins): built-in defaults < the TOML file < ``MEDIAGATE_*`` environment
variables < ``--set section.key=value`` on the command line.

Environment scheme: ``MEDIAGATE_`` + the dotted key path in upper case with ``__`` between
levels, e.g. ``MEDIAGATE_HTTP__PORT=9000`` or ``MEDIAGATE_PLUGINS__WEBHOOK__URLS='["http://x"]'``.
Values are read as TOML values when they parse as one (numbers, booleans, arrays, quoted
strings) and as plain strings otherwise.

Any unknown key or bad value is a :class:`ConfigError` that names the key and where it was
set: ``file:line``, the ``MEDIAGATE_*`` variable, or the ``--set`` argument. Every error is
reported at once, one per line.

Relative paths set in the file (``node.data_dir``, ``files.dir``, ``spool.dir``, ``media.font`` and every
``Path`` field of a plugin section, e.g. ``plugins.storage_local.dir``) are read against the file's
directory, so ``serve``, ``token`` and ``keys`` find the same database whatever the current
directory; relative paths from the environment or ``--set`` are read against the current one.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

ENV_PREFIX = "MEDIAGATE_"


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated strictly enough."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class NodeConfig(Section):
    id: str = Field("", description="Node id; empty means the host name.")
    data_dir: Path = Field(Path("./data"), description="Where SQLite, uploads and recordings live.")
    public_url: str = Field("", description="Base URL clients use to reach this node; empty derives it.")

    def resolved_id(self) -> str:
        return self.id or socket.gethostname()


class HttpConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    max_json_kb: int = Field(1024, gt=0)
    rate_limit_per_s: float = Field(100, ge=0, description="Requests per second per client address; 0 = off.")
    rate_limit_burst: int = Field(400, ge=1, description="Requests a client may send at once above the rate.")
    keepalive_timeout_s: float = Field(30, gt=0, description="Close a connection that has not sent a whole "
                                       "request head this long after it opened or after its last response.")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed to call /v1/; '*' any")


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class StoreConfig(Section):
    url: str = Field("", description="SQLAlchemy async URL; empty is SQLite under node.data_dir.")
    echo: bool = False
    sqlite_wal: bool = Field(True, description="SQLite: write-ahead log, synchronous=NORMAL, busy_timeout.")


class AuthConfig(Section):
    jwt_secret: str = Field("", description="HMAC key for tokens; empty generates one in data_dir.")
    api_keys: dict[str, str] = Field(default_factory=dict, description="access_key -> secret_key")
    bootstrap_key: bool = Field(True, description="Create and print an API key when none exists.")
    token_ttl_s: int = Field(86400, gt=0)
    max_token_ttl_s: int = Field(30 * 86400, gt=0)
    join_token_ttl_s: int = Field(3600, gt=0)
    key_cache_ttl_s: float = Field(2, ge=0, description="How long a key's revoked/active state is cached.")
    max_failures: int = Field(10, ge=0, description="Failed password/secret checks in a row per client address "
                              "and per room or key before 429; 0 = no limit.")
    failure_window_s: float = Field(60, gt=0, description="The failure allowance refills over this time.")


class RoomsConfig(Section):
    empty_timeout_s: int = Field(300, ge=0, description="Close a room this long after the last leaves.")
    max_participants: int = Field(0, ge=0, description="Default per-room limit; 0 is unlimited.")
    max_rooms: int = Field(0, ge=0, description="Node-wide room limit; 0 is unlimited.")


class FilesConfig(Section):
    dir: Path | None = Field(None, description="Upload directory; empty is data_dir/files.")
    max_size_mb: float = Field(50, gt=0)
    allowed_types: list[str] = Field(default_factory=lambda: [
        "png", "jpg", "jpeg", "gif", "webp", "bmp", "mp3", "mp4", "m4a", "aac", "wav", "ogg",
        "opus", "flac", "avi", "mov", "mkv", "flv", "webm", "ttf", "otf",
    ])


class MediaConfig(Section):
    font: str = Field("", description="Font file for text watermarks; empty searches for Noto Sans CJK.")
    canvas_width: int = Field(1280, ge=16, le=4096)
    canvas_height: int = Field(720, ge=16, le=4096)
    fps: int = Field(30, ge=1, le=60)
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    video_kbps: int = Field(1500, gt=0)
    audio_kbps: int = Field(128, gt=0)
    gop_s: float = Field(2, gt=0)
    audio_jitter_ms: int = Field(60, ge=20, le=1000, description="Target audio jitter buffer depth.")
    encoder_threads: int = Field(1, ge=0, description="libx264 threads per encoder; 1 spends the least CPU "
                                 "per frame, 0 lets x264 use every core (lower latency, more CPU).")
    decoder_threads: int = Field(1, ge=0, le=16, description="threads per video track decoder; 1 spends the "
                                 "least CPU per frame, 0 lets FFmpeg use every core (lower latency for 4K).")
    loop_lag_warn_ms: int = Field(50, gt=0)
    audio_levels_always: bool = Field(False, description="Decode and mix every room's audio even when no "
                                      "output or listener needs it (room.speakers / room.audio_levels events "
                                      "in rooms nobody mixes); false mixes only on demand.")


class SpoolConfig(Section):
    """The upload spool (gateway/spool.py): every recorded file waits here until it is stored."""

    dir: Path | None = Field(None, description="Spool directory; empty is data_dir/spool.")
    min_free_mb: float = Field(256, ge=0, description="Refuse new recordings (507) below this much free disk.")
    stop_free_mb: float = Field(64, ge=0, description="End running recordings (failed, reason disk_full; their "
                                "files kept and uploaded) below this much free disk.")
    max_attempts: int = Field(20, ge=1, description="Upload attempts per file before it is marked failed.")
    backoff_initial_s: float = Field(1, gt=0, description="First retry delay; doubles on each failure.")
    backoff_max_s: float = Field(30, gt=0, description="Longest retry delay.")
    concurrency: int = Field(2, ge=1, description="Recordings uploading at once (files of one go in order).")
    remux_recovered: bool = Field(True, description="Rewrite an MP4 a crash cut short as a clean MP4.")


class PluginsConfig(BaseModel):
    """``disabled`` lists plugin names not to load; other keys are per-plugin sections."""

    model_config = ConfigDict(extra="allow")
    disabled: list[str] = Field(default_factory=list)
    only: list[str] | None = Field(None, description="If set, load only these plugins.")

    def section_names(self) -> list[str]:
        return [name for name, value in (self.model_extra or {}).items() if isinstance(value, dict)]

    def section(self, name: str) -> dict[str, Any]:
        extra = self.model_extra or {}
        value = extra.get(name, {})
        return value if isinstance(value, dict) else {}


class Config(Section):
    node: NodeConfig = Field(default_factory=NodeConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rooms: RoomsConfig = Field(default_factory=RoomsConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)

    # where each file key was read: dotted path -> line; used to name lines in late errors
    _lines: dict[str, int] = {}
    _source: str | None = None
    # keys set by the environment or --set: dotted path -> "MEDIAGATE_X__Y" / "--set x.y=1"
    _origins: dict[str, str] = {}

    @property
    def store_url(self) -> str:
        if self.store.url:
            return self.store.url
        return f"sqlite+aiosqlite:///{(self.node.data_dir / 'mediagate.db').as_posix()}"

    @property
    def files_dir(self) -> Path:
        return self.files.dir or self.node.data_dir / "files"

    def public_url(self) -> str:
        if self.node.public_url:
            return self.node.public_url.rstrip("/")
        host = self.http.host if self.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.http.port}"

    def line_of(self, key: str) -> int | None:
        return _nearest_line(self._lines, key)

    def file_base(self, key: str) -> Path | None:
        """The directory a relative path at dotted `key` is read against: the config file's
        directory when the file set that key, else None (environment and --set values stay
        relative to the current directory, as a shell user expects)."""
        if self._source is None or key not in self._lines or key in self._origins:
            return None
        return Path(self._source).resolve().parent

    def error(self, message: str, key: str) -> ConfigError:
        """A ConfigError for `key` naming where it was set: file:line, variable or --set."""
        return _errors([(key, message)], self._lines, self._source, self._origins)

    def validation_error(self, exc: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
        """Every error of a pydantic validation as one ConfigError (plugin sections use it)."""
        return _errors(_describe(exc, prefix), self._lines, self._source, self._origins)


def _describe(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    found = []
    for error in exc.errors():
        key = ".".join([*prefix, *(str(part) for part in error["loc"])])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] != "extra_forbidden" and "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        found.append((key, message))
    return found


def _origin_of(origins: dict[str, str], key: str) -> str | None:
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found:
            return found
        parts.pop()
    deeper = [origin for path, origin in origins.items() if path.startswith(key + ".")]
    return deeper[0] if deeper else None


def _errors(items: list[tuple[str, str]], lines: dict[str, int], source: str | None,
            origins: dict[str, str]) -> ConfigError:
    """One ConfigError listing every (key, message); ``key``/``line`` describe the first."""
    rendered = []
    first_line: int | None = None
    first_origin: str | None = None
    for index, (key, message) in enumerate(items):
        origin = _origin_of(origins, key)
        line = None if origin else _nearest_line(lines, key)
        place = origin or (f"{source}:{line}" if source and line else source or "defaults")
        rendered.append(f"{place}: {key}: {message}")
        if index == 0:
            first_line, first_origin = line, origin
    error = ConfigError("\n".join(rendered))
    error.key = items[0][0] if items else None
    error.line = first_line
    error.source = first_origin or source
    error.errors = rendered  # type: ignore[attr-defined]
    return error


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\".]+)\s*=")


def locate_keys(text: str) -> dict[str, int]:
    """Map each dotted key path written in a TOML document to its 1-based line number.

    tomllib gives no positions, so this reads table headers and ``key =`` lines; it is only
    used to point error messages at the right line.
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    in_multiline: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            table = [part.strip().strip('"') for part in header.group(1).split(".")]
            lines.setdefault(".".join(table), number)
            continue
        key = _KEY.match(line)
        if key:
            path = table + [part.strip().strip('"') for part in key.group(1).split(".")]
            lines.setdefault(".".join(path), number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_multiline = quote
    return lines


def _nearest_line(lines: dict[str, int], key: str) -> int | None:
    deeper = [line for path, line in lines.items() if path.startswith(key + ".")]
    if key not in lines and deeper:  # a dotted key (log.level = ...) written inside another table
        return min(deeper)
    parts = key.split(".")
    while parts:
        found = lines.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return None


def parse_value(raw: str) -> Any:
    """Read an override value as TOML when it is one, else as a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_path(tree: dict[str, Any], path: list[str], value: Any, origin: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set a key under non-table value (from {origin})", key=".".join(path))
        node = child
    node[path[-1]] = value


def env_overrides(environ: dict[str, str], *, with_origin: bool = False) -> list[Any]:
    """``MEDIAGATE_HTTP__PORT=9000`` -> ``("http.port", 9000)``; MEDIAGATE_CONFIG is not a key.
    With ``with_origin`` each item also names its variable."""
    found: list[Any] = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in (ENV_PREFIX + "CONFIG", ENV_PREFIX + "URL",
                                                       ENV_PREFIX + "TOKEN"):
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if not all(path):
            continue
        item = (".".join(path), parse_value(raw))
        found.append((*item, f"environment variable {name}") if with_origin else item)
    return found


def set_overrides(items: list[str], *, with_origin: bool = False) -> list[Any]:
    """``--set http.port=9000`` items -> ``("http.port", 9000)``."""
    found: list[Any] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        pair = (key.strip(), parse_value(raw.strip()))
        found.append((*pair, f"--set {item}") if with_origin else pair)
    return found


_FILE_PATHS = (("node", "data_dir"), ("files", "dir"), ("spool", "dir"), ("media", "font"))


def _resolve_file_paths(tree: dict[str, Any], base: Path) -> None:
    """Relative paths written in the file are relative to the file, not to the current directory."""
    for section, key in _FILE_PATHS:
        value = tree.get(section, {}).get(key) if isinstance(tree.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            tree[section][key] = str((base / value).resolve())


def load_config(path: str | Path | None = None, *, overrides: list[str] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Read, merge and validate the configuration; raise ConfigError naming key and line."""
    tree: dict[str, Any] = {}
    lines: dict[str, int] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", source=source) from exc
        try:
            tree = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            raise ConfigError(f"invalid TOML: {exc}", line=int(match.group(1)) if match else None,
                              source=source) from exc
        lines = locate_keys(text)
        _resolve_file_paths(tree, Path(path).resolve().parent)
    env = os.environ if environ is None else environ
    origins: dict[str, str] = {}
    for key, value, origin in [*env_overrides(dict(env), with_origin=True),
                               *set_overrides(overrides or [], with_origin=True)]:
        _set_path(tree, key.split("."), value, origin)
        origins[key] = origin
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise _errors(_describe(exc), lines, source, origins) from exc
    config._lines = lines
    config._source = source
    config._origins = origins
    return config
