"""An independent implementation of the Qiniu upload token (Qiniu Kodo, "上传凭证" / Upload
Token, https://developer.qiniu.com/kodo/manual/1208/upload-token), and a small aiohttp stand-in
for Kodo's form upload (``POST /`` multipart: token, key, file) that accepts an upload only when
its token checks out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from aiohttp import web


def urlsafe_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def upload_token(access_key: str, secret_key: str, put_policy_json: str) -> str:
    """AccessKey:EncodedSign:EncodedPutPolicy, EncodedSign = urlsafe_b64(HMAC-SHA1(sk, EncodedPutPolicy))."""
    encoded_policy = urlsafe_b64(put_policy_json.encode())
    sign = hmac.new(secret_key.encode(), encoded_policy.encode(), hashlib.sha1).digest()
    return f"{access_key}:{urlsafe_b64(sign)}:{encoded_policy}"


class FakeKodo:
    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.objects: dict[tuple[str, str], bytes] = {}
        self.policies: list[dict] = []
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/", self.form_upload)

    @staticmethod
    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def form_upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        try:
            access_key, encoded_sign, encoded_policy = token.split(":")
            policy = json.loads(base64.urlsafe_b64decode(encoded_policy))
        except ValueError:
            return self.error(401, "bad token")
        expected = urlsafe_b64(hmac.new(self.secret_key.encode(), encoded_policy.encode(), hashlib.sha1).digest())
        if access_key != self.access_key or not hmac.compare_digest(expected, encoded_sign):
            return self.error(401, "bad token")
        if policy.get("deadline", 0) < time.time():
            return self.error(401, "token out of date")
        bucket, _, scoped_key = policy["scope"].partition(":")
        key = str(form.get("key", ""))
        if scoped_key and scoped_key != key:
            return self.error(403, "key doesn't match with scope")
        upload = form["file"]
        body = upload.file.read()  # type: ignore[union-attr]
        self.objects[(bucket, key)] = body
        self.policies.append(policy)
        return web.json_response({"key": key, "hash": hashlib.sha1(body).hexdigest()})
