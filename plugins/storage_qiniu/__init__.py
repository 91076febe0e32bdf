"""Storage backend ``qiniu``: Qiniu Cloud Kodo through the vendor's SDK (``qiniu``), which makes
the upload token (``AccessKey:EncodedSign:EncodedPutPolicy``, HMAC-SHA1, URL-safe base64) and
chooses a form upload or a resumable (multi-part) one by size. Its calls block, so they run on
a worker thread.

``endpoint`` is the upload host (``https://up-z0.qiniup.com``); empty lets the SDK look the
bucket's region up (or uses ``region``: z0, z1, z2, na0, as0…). Kodo serves objects from a
domain bound to the bucket: set ``domain`` (config) so reported URLs point at it.
"""

from __future__ import annotations

import json
import mimetypes
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import ValidationFailed
from gateway.hookspecs import hookimpl
from gateway.storage import UploadError, check_prefix, merge_settings, run_upload, url_problem

if TYPE_CHECKING:
    from gateway.node import Node

FIELD = "record.storage"
# 401 bad token/signature, 403 forbidden, 612/631 no such bucket or key scope: retrying cannot help
PERMANENT_STATUS = {400, 401, 403, 413, 612, 614, 631}
BUCKET_RE = re.compile(r"^[A-Za-z0-9\-_]{1,63}$")


class QiniuConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bucket: str = Field("", description="default bucket")
    access_key: str = Field("", description="default AccessKey")
    secret_key: str = Field("", repr=False, description="default SecretKey")
    region: str = Field("", description="region id (z0, z1, z2, na0, as0); empty = the SDK asks")
    endpoint: str = Field("", description="upload host, e.g. https://up-z0.qiniup.com; empty = by region")
    domain: str = Field("", description="domain bound to the bucket, for the reported URLs (https://cdn.example.com)")
    token_ttl_s: int = Field(3600, gt=0, description="lifetime of each upload token")
    part_size_mb: int = Field(4, ge=1, le=1024, description="part size of resumable uploads")


class QiniuStorage:
    name = "qiniu"

    def __init__(self, config: QiniuConfig) -> None:
        self.config = config

    def settings(self, options: dict[str, Any]) -> dict[str, Any]:
        return merge_settings(self.config, options)

    def validate(self, options: dict[str, Any]) -> None:
        check_prefix(options)
        s = self.settings(options)
        if not s["bucket"]:
            raise ValidationFailed("a qiniu recording needs a bucket", field=f"{FIELD}.bucket")
        if not BUCKET_RE.match(s["bucket"]):
            raise ValidationFailed(f"bad Kodo bucket name {s['bucket']!r}", field=f"{FIELD}.bucket")
        if s["endpoint"] and url_problem(s["endpoint"]) is not None:
            raise ValidationFailed(f"bad endpoint {s['endpoint']!r}: the upload host as http(s)://host[:port]",
                                       field=f"{FIELD}.endpoint")
        if not s["access_key"] or not s["secret_key"]:
            missing = "access_key" if not s["access_key"] else "secret_key"
            raise ValidationFailed(f"a qiniu recording needs {missing}, in the request or in [plugins.storage_qiniu]",
                                   field=f"{FIELD}.{missing}")

    def local_dir(self, options: dict[str, Any]) -> None:
        return None

    def _regions(self, s: dict[str, Any]) -> list[Any] | None:
        import qiniu
        from qiniu.http.region import Region

        if s["endpoint"]:
            return [qiniu.Region(up_host=s["endpoint"].rstrip("/"), up_host_backup=s["endpoint"].rstrip("/"))]
        if s["region"]:
            return [Region.from_region_id(s["region"])]
        return None

    def _upload(self, path: Path, key: str, s: dict[str, Any]) -> tuple[Any, Any]:
        import qiniu

        token = qiniu.Auth(s["access_key"], s["secret_key"]).upload_token(s["bucket"], key, self.config.token_ttl_s)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return qiniu.put_file_v2(token, key, str(path), mime_type=mime, version="v2", bucket_name=s["bucket"],
                                 part_size=self.config.part_size_mb * 1024 * 1024, regions=self._regions(s))

    def url_for(self, s: dict[str, Any], key: str) -> str:
        if self.config.domain:
            return f"{self.config.domain.rstrip('/')}/{quote(key)}"
        return f"qiniu://{s['bucket']}/{quote(key)}"  # Kodo has no default public domain

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        s = self.settings(options)
        size = path.stat().st_size
        ret, info = await run_upload(self._upload, path, key, s)  # the SDK answers errors in `info`
        status = getattr(info, "status_code", -1)
        if ret is None or status != 200:
            message = _server_message(info)
            code = str(status) if status and status > 0 else "connection_error"
            raise UploadError(str(message), code=code, retry=status not in PERMANENT_STATUS)
        return {"backend": self.name, "bucket": s["bucket"], "key": ret.get("key", key), "size": size,
                "hash": ret.get("hash"), "url": self.url_for(s, key)}


def _server_message(info: Any) -> str:
    """Kodo answers errors as ``{"error": "..."}``; the SDK keeps the raw body."""
    body = getattr(info, "text_body", None)
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return str(body)
        if isinstance(parsed, dict) and parsed.get("error"):
            return str(parsed["error"])
    return str(getattr(info, "error", None) or body or "upload failed")


class QiniuStoragePlugin:
    config_model = QiniuConfig
    config: QiniuConfig

    def __init__(self) -> None:
        self.config = QiniuConfig()

    @hookimpl
    def mediagate_storage_backends(self, node: Node) -> list[QiniuStorage]:
        return [QiniuStorage(self.config)]
