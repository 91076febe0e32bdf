"""S3 backend without a server: request fields over config fields, validation naming the field
(also through the egress API: 400 before anything starts), object URLs per addressing style, and
the server's code and message taken out of boto3's wrapped errors."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import ValidationFailed
from plugins.storage_s3 import S3Config, S3Storage, upload_error
from tests.conftest import ACCESS_KEY, SECRET_KEY


def test_request_fields_override_config_fields_one_by_one() -> None:
    storage = S3Storage(S3Config(endpoint="http://s3.local:9000", bucket="base", access_key="AK", secret_key="SK"))
    merged = storage.settings({"bucket": "other", "access_key": None, "secret_key": "", "region": "eu-west-1"})
    assert merged == {"endpoint": "http://s3.local:9000", "region": "eu-west-1", "bucket": "other",
                      "access_key": "AK", "secret_key": "SK"}


@pytest.mark.parametrize(("options", "field"), [
    ({}, "record.storage.bucket"),
    ({"bucket": "Bad_Bucket"}, "record.storage.bucket"),
    ({"bucket": "ok-bucket", "endpoint": "not a url"}, "record.storage.endpoint"),
    ({"bucket": "ok-bucket", "endpoint": "ftp://host"}, "record.storage.endpoint"),
    ({"bucket": "ok-bucket", "endpoint": "http://host:port"}, "record.storage.endpoint"),
    ({"bucket": "ok-bucket", "endpoint": "http://host/path"}, "record.storage.endpoint"),
    ({"bucket": "ok-bucket", "access_key": "AK"}, "record.storage.secret_key"),
    ({"bucket": "ok-bucket", "prefix": "a/../../b"}, "record.storage.prefix"),
    ({"bucket": "ok-bucket", "prefix": "nul\x00"}, "record.storage.prefix"),
])
def test_bad_options_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        S3Storage(S3Config()).validate({"backend": "s3", **options})
    assert caught.value.field == field


def test_urls_follow_the_addressing_style() -> None:
    settings = {"endpoint": "https://s3.example.com", "bucket": "rec", "region": "us-east-1"}
    assert S3Storage(S3Config(addressing_style="path")).url_for(settings, "a b/c.mp4") == \
        "https://s3.example.com/rec/a%20b/c.mp4"
    assert S3Storage(S3Config(addressing_style="virtual")).url_for(settings, "c.mp4") == \
        "https://rec.s3.example.com/c.mp4"
    assert S3Storage(S3Config()).url_for({**settings, "endpoint": "", "region": "eu-west-1"}, "c.mp4") == \
        "https://rec.s3.eu-west-1.amazonaws.com/c.mp4"
    assert S3Storage(S3Config(public_url="https://cdn.example.com/")).url_for(settings, "c.mp4") == \
        "https://cdn.example.com/c.mp4"


def test_the_servers_code_and_message_come_out_of_boto3s_wrapping() -> None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, EndpointConnectionError

    inner = ClientError({"Error": {"Code": "SignatureDoesNotMatch", "Message": "The request signature we calculated"
                                   " does not match"}}, "PutObject")
    try:
        try:
            raise inner
        except ClientError as exc:
            raise S3UploadFailedError(f"Failed to upload a to b/c: {exc}") from exc
    except S3UploadFailedError as wrapped:
        error = upload_error(wrapped)
    assert (error.code, error.message, error.retry) == (
        "SignatureDoesNotMatch", "The request signature we calculated does not match", False)
    slow = upload_error(ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your rate"}}, "PutObject"))
    assert slow.retry is True
    gone = upload_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert gone.retry is True and gone.code == "EndpointConnectionError" and "127.0.0.1:1" in gone.message


@pytest.mark.parametrize(("storage", "field"), [
    ({"backend": "ftp"}, "record.storage.backend"),
    ({"backend": "s3"}, "record.storage.bucket"),
    ({"backend": "s3", "bucket": "rec", "endpoint": "http//missing-colon"}, "record.storage.endpoint"),
    ({"backend": "cos", "bucket": "rec-1250000000", "region": "ap-guangzhou", "access_key": "a",
      "secret_key": "b", "endpoint": "http://h:x"}, "record.storage.endpoint"),
    ({"backend": "qiniu", "access_key": "a", "secret_key": "b"}, "record.storage.bucket"),
])
async def test_bad_storage_in_an_egress_request_is_a_400_naming_the_field(make_node: Any, storage: dict[str, Any],
                                                                         field: str) -> None:
    node = await make_node()
    async with TestClient(TestServer(node.app)) as client:
        auth = {"Authorization": "Basic " + __import__("base64").b64encode(
            f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()}
        assert (await client.post("/v1/rooms", json={"room_id": "bad"}, headers=auth)).status == 201
        response = await client.post("/v1/rooms/bad/egress", headers=auth,
                                     json={"kind": "record", "record": {"storage": storage}})
        assert response.status == 400, await response.text()
        error = (await response.json())["error"]
        assert (error["code"], error["field"]) == ("validation_error", field)
        assert node.egress.list("bad") == [] and not list(node.spool.root.iterdir())
