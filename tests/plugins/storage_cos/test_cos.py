"""COS backend: the request signature pinned to Tencent's documented examples, the SDK's
signature checked by an independent implementation, and uploads to a local COS stand-in that
refuses any request whose signature does not check out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestServer

from gateway.errors import ValidationFailed
from gateway.storage import UploadError
from plugins.storage_cos import CosConfig, CosStorage
from tests.plugins.storage_cos.cos_fake import FakeCos, sign_key, signature, string_to_sign
from tests.plugins.storage_cos.recording import assert_red, record_red

# Tencent Cloud COS, "Request Signature" (https://www.tencentcloud.com/document/product/436/7778),
# section "Use Cases": the example key pair and the two worked requests.
DOC_SECRET_ID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
DOC_SECRET_KEY = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
DOC_HOST = "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"


def test_signature_matches_documented_put_example() -> None:
    headers = {"Content-Length": "13", "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg==", "Content-Type": "text/plain",
               "Date": "Thu, 16 May 2019 06:45:51 GMT", "Host": DOC_HOST, "x-cos-acl": "private",
               "x-cos-grant-read": 'uin="100000000011"'}
    key_time = "1557989151;1557996351"
    assert sign_key(DOC_SECRET_KEY, key_time) == "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
    sts, params, header_list = string_to_sign("PUT", "/exampleobject(腾讯云)", {}, headers, key_time)
    assert sts == "sha1\n1557989151;1557996351\n8b2751e77f43a0995d6e9eb9477f4b685cca4172\n"
    assert header_list == "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
    assert params == ""
    assert signature(DOC_SECRET_KEY, "PUT", "/exampleobject(腾讯云)", {}, headers, key_time) == \
        "3b8851a11a569213c17ba8fa7dcf2abec6935172"


def test_signature_matches_documented_get_example() -> None:
    headers = {"Date": "Thu, 16 May 2019 06:55:53 GMT", "Host": DOC_HOST}
    params = {"response-content-type": "application/octet-stream", "response-cache-control": "max-age=600"}
    key_time = "1557989753;1557996953"
    assert sign_key(DOC_SECRET_KEY, key_time) == "937914bf490e9e8c189836aad2052e4feeb35eaf"
    _, param_list, _ = string_to_sign("GET", "/exampleobject(腾讯云)", params, headers, key_time)
    assert param_list == "response-cache-control;response-content-type"
    assert signature(DOC_SECRET_KEY, "GET", "/exampleobject(腾讯云)", params, headers, key_time) == \
        "01681b8c9d798a678e43b685a9f1bba0f6c0e012"


def test_sdk_signature_agrees_with_the_documented_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK signs a PUT; the pinned implementation above recomputes the same signature."""
    import qcloud_cos.cos_auth as cos_auth
    from qcloud_cos import CosConfig as SdkConfig

    monkeypatch.setattr(cos_auth.time, "time", lambda: 1557989211.0)  # sign time = 1557989151;1557996351
    conf = SdkConfig(Region="ap-beijing", SecretId=DOC_SECRET_ID, SecretKey=DOC_SECRET_KEY)
    auth = cos_auth.CosS3Auth(conf, key="exampleobject(腾讯云)", expire=7140)
    headers = {"Host": DOC_HOST, "Content-Type": "text/plain", "Content-MD5": "mQ/fVh815F3k6TAUm8m0eg==",
               "x-cos-acl": "private", "x-cos-grant-read": 'uin="100000000011"'}
    request = requests.Request("PUT", f"https://{DOC_HOST}/exampleobject", headers=headers, data=b"ObjectContent")
    signed = auth(request.prepare())
    fields = dict(part.split("=", 1) for part in signed.headers["Authorization"].split("&"))
    assert fields["q-ak"] == DOC_SECRET_ID and fields["q-key-time"] == "1557989151;1557996351"
    sent = {name: signed.headers[name] for name in signed.headers if name.lower() in fields["q-header-list"].split(";")}
    assert fields["q-header-list"] == "content-length;content-md5;content-type;host;x-cos-acl;x-cos-grant-read"
    assert fields["q-signature"] == signature(DOC_SECRET_KEY, "PUT", "/exampleobject(腾讯云)", {}, sent,
                                              "1557989151;1557996351")


def backend(server: TestServer, **overrides: str) -> CosStorage:
    config = {"region": "ap-guangzhou", "bucket": "records-1250000000", "access_key": "AKIDtest",
              "secret_key": "cos-secret", "endpoint": f"http://127.0.0.1:{server.port}", **overrides}
    return CosStorage(CosConfig(**config))


@pytest.fixture
async def cos_server() -> TestServer:
    fake = FakeCos("AKIDtest", "cos-secret")
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    server.fake = fake  # type: ignore[attr-defined]
    yield server
    await server.close()


async def test_upload_to_fake_cos_with_checked_signature(cos_server: TestServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400
    path = tmp_path / "part 1.mp4"
    path.write_bytes(payload)
    result = await backend(cos_server).put(path, "room/part 1.mp4", {"backend": "cos", "prefix": "room"})
    fake: FakeCos = cos_server.fake  # type: ignore[attr-defined]
    assert fake.objects[("records-1250000000.cos.ap-guangzhou.myqcloud.com", "room/part 1.mp4")] == payload
    assert "host" in fake.checked[0].split(";") and "content-length" in fake.checked[0].split(";")
    assert result["size"] == len(payload)
    assert result["url"] == "https://records-1250000000.cos.ap-guangzhou.myqcloud.com/room/part%201.mp4"


async def test_wrong_secret_is_the_servers_error(cos_server: TestServer, tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x" * 1000)
    storage = backend(cos_server)
    with pytest.raises(UploadError) as caught:
        await storage.put(path, "a.mp4", {"backend": "cos", "secret_key": "not-the-secret"})
    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.message == "The Signature you specified is invalid."
    assert caught.value.retry is False
    assert cos_server.fake.objects == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("options", "field"), [
    ({"bucket": ""}, "record.storage.bucket"),
    ({"bucket": "no_appid"}, "record.storage.bucket"),
    ({"region": "nowhere"}, "record.storage.region"),
    ({"endpoint": "ftp://x"}, "record.storage.endpoint"),
    ({"endpoint": "http://host:99999"}, "record.storage.endpoint"),
    ({"prefix": "../up"}, "record.storage.prefix"),
])
def test_bad_options_name_the_field(options: dict[str, str], field: str) -> None:
    storage = CosStorage(CosConfig(region="ap-guangzhou", access_key="a", secret_key="b", bucket="ok-1250000000"))
    if options.get("bucket") == "":
        storage = CosStorage(CosConfig(region="ap-guangzhou", access_key="a", secret_key="b"))
    with pytest.raises(ValidationFailed) as caught:
        storage.validate({"backend": "cos", **options})
    assert caught.value.field == field


def test_missing_credentials_are_named() -> None:
    storage = CosStorage(CosConfig(region="ap-guangzhou", bucket="ok-1250000000"))
    with pytest.raises(ValidationFailed) as caught:
        storage.validate({"backend": "cos"})
    assert caught.value.field == "record.storage.access_key"


async def test_a_recording_lands_in_fake_cos_through_the_spool(make_node: Any, cos_server: TestServer,
                                                               tmp_path: Path) -> None:
    node = await make_node('plugins.storage_cos.region="ap-guangzhou"', 'plugins.storage_cos.access_key="AKIDtest"',
                           'plugins.storage_cos.secret_key="cos-secret"',
                           f'plugins.storage_cos.endpoint="http://127.0.0.1:{cos_server.port}"')
    data = await record_red(node, {"backend": "cos", "bucket": "records-1250000000", "prefix": "rec"})
    fake: FakeCos = cos_server.fake  # type: ignore[attr-defined]
    body = fake.objects[("records-1250000000.cos.ap-guangzhou.myqcloud.com", data["key"])]
    assert data["key"].startswith("rec/cosroom/") and len(body) == data["size"]
    assert_red(body, tmp_path)
