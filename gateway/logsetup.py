"""structlog setup: console output for humans, JSON lines for machines, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"(secret|password|passwd|token|authorization|signature|sign$|private)", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")
# secrets that may sit inside free text (a SQL parameter list, a repr): KDF hashes and JWTs
_IN_TEXT = re.compile(r"scrypt\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


def redact_text(text: str) -> str:
    if "Bearer" in text:
        text = _BEARER.sub(r"\1***", text)
    if "scrypt$" in text or "eyJ" in text:
        text = _IN_TEXT.sub("***", text)
    return text


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask values whose key names a secret, and bearer tokens in text."""
    return {k: ("***" if k != "event" and _SECRET_KEY.search(k) else redact(v)) for k, v in event_dict.items()}


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every stdlib log record (aiosqlite, sqlalchemy, aiohttp) is rendered and masked when made,
    so no handler, however configured, sees a password hash or a token in its arguments."""
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to logging's own error report
        return record
    masked = redact_text(message)
    if masked != message or record.args:
        record.msg, record.args = masked, None
    return record


def install_stdlib_redaction() -> None:
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now, not the stream it was at configure time (which a
    test harness or a daemonising wrapper may have closed since)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    # libraries that use stdlib logging (aiohttp access log, sqlalchemy) go through the same level
    # and the same redaction
    install_stdlib_redaction()
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.getLogger("libav").setLevel(logging.ERROR)
