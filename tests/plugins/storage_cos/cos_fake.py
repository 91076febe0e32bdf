"""An independent implementation of the COS request signature (Tencent Cloud, "Request
Signature", https://www.tencentcloud.com/document/product/436/7778), and a small aiohttp COS
stand-in that accepts a PUT Object only when its Authorization header checks out."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, unquote

from aiohttp import web


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")


def string_to_sign(method: str, path: str, params: dict[str, str], headers: dict[str, str],
                   sign_time: str) -> tuple[str, str, str]:
    """(HttpString, UrlParamList, HeaderList) -> StringToSign, per the document's steps 3-6."""
    pairs = sorted((_enc(k).lower(), _enc(v)) for k, v in params.items())
    hpairs = sorted((_enc(k).lower(), _enc(v)) for k, v in headers.items())
    http_string = "\n".join([method.lower(), path, "&".join(f"{k}={v}" for k, v in pairs),
                             "&".join(f"{k}={v}" for k, v in hpairs), ""])
    sts = f"sha1\n{sign_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    return sts, ";".join(k for k, _ in pairs), ";".join(k for k, _ in hpairs)


def sign_key(secret_key: str, key_time: str) -> str:
    return hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()


def signature(secret_key: str, method: str, path: str, params: dict[str, str], headers: dict[str, str],
              key_time: str) -> str:
    sts, _, _ = string_to_sign(method, path, params, headers, key_time)
    return hmac.new(sign_key(secret_key, key_time).encode(), sts.encode(), hashlib.sha1).hexdigest()


class FakeCos:
    """Objects by (host, key); every request's signature is recomputed from what arrived."""

    def __init__(self, secret_id: str, secret_key: str) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.objects: dict[tuple[str, str], bytes] = {}
        self.checked: list[str] = []  # header lists of accepted requests
        self.app = web.Application()
        self.app.router.add_put("/{key:.+}", self.put)

    def error(self, status: int, code: str, message: str, resource: str = "") -> web.Response:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Resource>{resource or '/'}</Resource><RequestId>fake</RequestId><TraceId>fake</TraceId></Error>")
        return web.Response(status=status, text=body, content_type="application/xml")

    async def put(self, request: web.Request) -> web.Response:
        auth = dict(part.split("=", 1) for part in request.headers.get("Authorization", "").split("&") if "=" in part)
        if auth.get("q-sign-algorithm") != "sha1" or auth.get("q-ak") != self.secret_id:
            return self.error(403, "InvalidAccessKeyId", "The access key Id format you provided is invalid.")
        start, end = (int(t) for t in auth["q-key-time"].split(";"))
        if not start <= time.time() <= end:
            return self.error(403, "RequestTimeTooSkewed", "The difference between the request time and the "
                                                            "server's time is too large.")
        wanted = [h for h in auth["q-header-list"].split(";") if h]
        headers = {name: request.headers[name] for name in wanted}
        params = {k: v for k, v in request.query.items() if k.lower() in auth["q-url-param-list"].split(";")}
        path = "/" + unquote(request.match_info["key"])
        expected = signature(self.secret_key, request.method, path, params, headers, auth["q-key-time"])
        if "host" not in wanted or not hmac.compare_digest(expected, auth.get("q-signature", "")):
            return self.error(403, "SignatureDoesNotMatch", "The Signature you specified is invalid.")
        body = await request.read()
        self.objects[(request.headers["Host"], path.lstrip("/"))] = body
        self.checked.append(auth["q-header-list"])
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
