"""Secrets never reach the log: keys that name a secret and bearer tokens are masked."""

from __future__ import annotations

import json

import structlog

from gateway.logsetup import configure_logging


def test_secrets_are_masked_in_json_logs(capsys) -> None:
    configure_logging("info", "json")
    log = structlog.get_logger("test")
    log.info("storage configured", access_key="AKID", secret_key="s3cr3t", password="hunter2",
             options={"secret_key": "nested-secret", "bucket": "b"},
             header="Authorization: Bearer eyJhbGciOi.payload.sig", token="eyJ.x.y")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "s3cr3t" not in line and "hunter2" not in line and "nested-secret" not in line
    assert "eyJhbGciOi" not in line and "eyJ.x.y" not in line
    assert record["access_key"] == "AKID" and record["options"]["bucket"] == "b"
    assert record["secret_key"] == "***" and record["options"]["secret_key"] == "***"
    assert record["header"] == "Authorization: Bearer ***"
    configure_logging("warning", "console")


def test_console_format_masks_too(capsys) -> None:
    configure_logging("info", "console")
    structlog.get_logger("test").info("webhook", key_secret="abc123", url="http://x")
    err = capsys.readouterr().err
    assert "abc123" not in err and "http://x" in err
    configure_logging("warning", "console")
