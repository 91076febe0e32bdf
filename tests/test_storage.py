"""What the storage backends share (gateway/storage.py): the request's fields over the config's,
the check of an endpoint URL, and an SDK's failure turned into the server's code and message."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from gateway.storage import UploadError, merge_settings, run_upload, upload_error, url_problem


class Section(BaseModel):
    endpoint: str = "http://127.0.0.1:9000"
    region: str = "z0"
    bucket: str = "configured"
    access_key: str = "AK"
    secret_key: str = "SK"


def test_request_fields_win_field_by_field_and_empty_ones_fall_back() -> None:
    merged = merge_settings(Section(), {"bucket": "asked", "access_key": "", "secret_key": None, "prefix": "p"})
    assert merged == {"endpoint": "http://127.0.0.1:9000", "region": "z0", "bucket": "asked", "access_key": "AK",
                      "secret_key": "SK"}  # `prefix` is not a backend setting


@pytest.mark.parametrize(("url", "ok"), [("https://s3.example.com", True), ("http://127.0.0.1:9000/", True),
                                         ("ftp://host", False), ("http://", False), ("http://h:99999", False),
                                         ("http://h/bucket", False), ("http://h?x=1", False)])
def test_url_problem(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


class ServerSaid(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"the server said {code}")
        self.code = code


def translate(exc: BaseException) -> UploadError | None:
    if isinstance(exc, ServerSaid):
        return UploadError(str(exc), code=exc.code, retry=exc.code != "AccessDenied")
    return None


def test_the_servers_words_are_found_under_an_sdks_wrapping() -> None:
    try:
        try:
            raise ServerSaid("AccessDenied")
        except ServerSaid as inner:
            raise RuntimeError("transfer failed") from inner
    except RuntimeError as wrapped:
        error = upload_error(wrapped, translate)
    assert (error.code, error.message, error.retry) == ("AccessDenied", "the server said AccessDenied", False)
    other = upload_error(TimeoutError("read timed out"), translate)
    assert (other.code, other.message, other.retry) == ("TimeoutError", "read timed out", True)


async def test_run_upload_returns_the_result_or_raises_an_upload_error() -> None:
    assert await run_upload(lambda a, b: a + b, 2, 3) == 5

    def refused() -> None:
        raise ServerSaid("SlowDown")

    with pytest.raises(UploadError) as caught:
        await run_upload(refused, translate=translate)
    assert caught.value.code == "SlowDown" and caught.value.retry
