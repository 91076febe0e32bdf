"""Qiniu backend: the upload token pinned to Qiniu's documented example, the SDK's token checked
by an independent implementation, and uploads to a local Kodo stand-in that refuses any upload
whose token does not check out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import ValidationFailed
from gateway.storage import UploadError
from plugins.storage_qiniu import QiniuConfig, QiniuStorage
from tests.plugins.storage_cos.recording import assert_red, record_red
from tests.plugins.storage_qiniu.qiniu_fake import FakeKodo, upload_token

# Qiniu Kodo, "上传凭证" (Upload Token), https://developer.qiniu.com/kodo/manual/1208/upload-token:
# the worked example with AccessKey MY_ACCESS_KEY and SecretKey MY_SECRET_KEY.
DOC_POLICY = ('{"scope":"my-bucket:sunflower.jpg","deadline":1451491200,"returnBody":"{\\"name\\":$(fname),'
              '\\"size\\":$(fsize),\\"w\\":$(imageInfo.width),\\"h\\":$(imageInfo.height),\\"hash\\":$(etag)}"}')
DOC_ENCODED_POLICY = ("eyJzY29wZSI6Im15LWJ1Y2tldDpzdW5mbG93ZXIuanBnIiwiZGVhZGxpbmUiOjE0NTE0OTEyMDAsInJldHVybkJvZHkiOiJ7"
                      "XCJuYW1lXCI6JChmbmFtZSksXCJzaXplXCI6JChmc2l6ZSksXCJ3XCI6JChpbWFnZUluZm8ud2lkdGgpLFwiaFwiOiQo"
                      "aW1hZ2VJbmZvLmhlaWdodCksXCJoYXNoXCI6JChldGFnKX0ifQ==")
DOC_ENCODED_SIGN = "wQ4ofysef1R7IKnrziqtomqyDvI="


def test_token_matches_documented_example() -> None:
    assert upload_token("MY_ACCESS_KEY", "MY_SECRET_KEY", DOC_POLICY) == \
        f"MY_ACCESS_KEY:{DOC_ENCODED_SIGN}:{DOC_ENCODED_POLICY}"
    sign = base64.urlsafe_b64decode(DOC_ENCODED_SIGN)
    assert sign.hex() == "c10e287f2b1e7f547b20a9ebce2aada26ab20ef2"  # the document's hex of the HMAC-SHA1


def test_sdk_token_agrees_with_the_documented_scheme() -> None:
    import qiniu

    auth = qiniu.Auth("MY_ACCESS_KEY", "MY_SECRET_KEY")
    assert auth.token_with_data(DOC_POLICY) == f"MY_ACCESS_KEY:{DOC_ENCODED_SIGN}:{DOC_ENCODED_POLICY}"
    token = auth.upload_token("my-bucket", "sunflower.jpg", 3600)
    policy_json = base64.urlsafe_b64decode(token.split(":")[2]).decode()
    assert json.loads(policy_json)["scope"] == "my-bucket:sunflower.jpg"
    assert token == upload_token("MY_ACCESS_KEY", "MY_SECRET_KEY", policy_json)


@pytest.fixture
async def kodo() -> TestServer:
    fake = FakeKodo("qiniu-ak", "qiniu-sk")
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    server.fake = fake  # type: ignore[attr-defined]
    yield server
    await server.close()


def backend(server: TestServer) -> QiniuStorage:
    return QiniuStorage(QiniuConfig(bucket="records", access_key="qiniu-ak", secret_key="qiniu-sk",
                                    endpoint=f"http://127.0.0.1:{server.port}", domain="https://media.example.com"))


async def test_upload_to_fake_kodo_with_checked_token(kodo: TestServer, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 300
    path = tmp_path / "seg_0001.ts"
    path.write_bytes(payload)
    result = await backend(kodo).put(path, "rec/seg_0001.ts", {"backend": "qiniu"})
    fake: FakeKodo = kodo.fake  # type: ignore[attr-defined]
    assert fake.objects[("records", "rec/seg_0001.ts")] == payload
    assert fake.policies[0]["scope"] == "records:rec/seg_0001.ts"
    assert result["url"] == "https://media.example.com/rec/seg_0001.ts"
    assert result["size"] == len(payload)


async def test_wrong_secret_is_the_servers_error(kodo: TestServer, tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x" * 2000)
    with pytest.raises(UploadError) as caught:
        await backend(kodo).put(path, "a.mp4", {"backend": "qiniu", "secret_key": "wrong"})
    assert caught.value.code == "401"
    assert caught.value.message == "bad token"
    assert caught.value.retry is False


async def test_unreachable_host_is_retried(tmp_path: Path) -> None:
    from tests.e2e.helpers import free_port

    path = tmp_path / "a.mp4"
    path.write_bytes(b"x" * 2000)
    storage = QiniuStorage(QiniuConfig(bucket="records", access_key="k", secret_key="s",
                                       endpoint=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UploadError) as caught:
        await storage.put(path, "a.mp4", {"backend": "qiniu"})
    assert caught.value.retry is True


@pytest.mark.parametrize(("options", "field"), [
    ({"bucket": "bad bucket"}, "record.storage.bucket"),
    ({"endpoint": "up-z0.qiniup.com"}, "record.storage.endpoint"),
    ({"access_key": "", "secret_key": ""}, "record.storage.access_key"),
    ({"prefix": "/abs"}, "record.storage.prefix"),
])
def test_bad_options_name_the_field(options: dict[str, str], field: str) -> None:
    config = {"bucket": "records", "access_key": "a", "secret_key": "b"}
    config.update({k: v for k, v in options.items() if k in ("access_key", "secret_key")})
    storage = QiniuStorage(QiniuConfig(**config))
    with pytest.raises(ValidationFailed) as caught:
        storage.validate({"backend": "qiniu", **{k: v for k, v in options.items() if k not in config or v}})
    assert caught.value.field == field


async def test_a_recording_lands_in_fake_kodo_through_the_spool(make_node: Any, kodo: TestServer,
                                                                tmp_path: Path) -> None:
    node = await make_node('plugins.storage_qiniu.access_key="qiniu-ak"', 'plugins.storage_qiniu.secret_key="qiniu-sk"',
                           f'plugins.storage_qiniu.endpoint="http://127.0.0.1:{kodo.port}"',
                           'plugins.storage_qiniu.domain="https://media.example.com"')
    data = await record_red(node, {"backend": "qiniu", "bucket": "records", "prefix": "rec"})
    fake: FakeKodo = kodo.fake  # type: ignore[attr-defined]
    body = fake.objects[("records", data["key"])]
    assert data["url"] == f"https://media.example.com/{data['key']}" and len(body) == data["size"]
    assert_red(body, tmp_path)
