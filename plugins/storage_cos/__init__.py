"""Storage backend ``cos``: Tencent Cloud Object Storage through the vendor's SDK
(``cos-python-sdk-v5``), which signs every request (``q-sign-algorithm=sha1&q-ak=…``) and splits
large files into parts. Its calls block, so they run on a worker thread.

``bucket`` is the full COS bucket name with the APPID (``examplebucket-1250000000``),
``access_key``/``secret_key`` are the SecretId/SecretKey. ``endpoint`` is empty (the region's
``cos.<region>.myqcloud.com``), a host name (an accelerated or private endpoint), or
``http(s)://host:port`` to reach a COS-compatible server at that address while signing for the
bucket's usual host name (private deployments, tests).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import ValidationFailed
from gateway.hookspecs import hookimpl
from gateway.storage import UploadError, check_prefix, merge_settings, run_upload, url_problem

if TYPE_CHECKING:
    from gateway.node import Node

FIELD = "record.storage"
PERMANENT = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "InvalidBucketName",
             "InvalidArgument"}
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9\-]{0,48}-\d{5,}$")
# the SDK logs every request with its headers at INFO; keep its warnings and errors only
logging.getLogger("qcloud_cos").setLevel(logging.WARNING)
HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+$")
REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")


class CosConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field("", description="e.g. ap-guangzhou")
    bucket: str = Field("", description="default bucket, BucketName-APPID")
    access_key: str = Field("", description="default SecretId")
    secret_key: str = Field("", repr=False, description="default SecretKey")
    endpoint: str = Field("", description="empty = cos.<region>.myqcloud.com; a host; or http(s)://host:port")
    scheme: str = Field("https", pattern="^https?$")
    part_size_mb: int = Field(8, ge=1, le=5120, description="files above this go up in parts of this size")
    timeout_s: int = Field(60, gt=0)
    public_url: str = Field("", description="base of the URLs reported for stored objects (a CDN domain)")


class CosStorage:
    name = "cos"

    def __init__(self, config: CosConfig) -> None:
        self.config = config
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def settings(self, options: dict[str, Any]) -> dict[str, Any]:
        return merge_settings(self.config, options)

    def validate(self, options: dict[str, Any]) -> None:
        check_prefix(options)
        s = self.settings(options)
        if not s["bucket"]:
            raise ValidationFailed("a cos recording needs a bucket (BucketName-APPID)", field=f"{FIELD}.bucket")
        if not BUCKET_RE.match(s["bucket"]):
            raise ValidationFailed(f"bad COS bucket {s['bucket']!r}: expected BucketName-APPID, "
                                   "e.g. examplebucket-1250000000", field=f"{FIELD}.bucket")
        if not s["region"] or not REGION_RE.match(s["region"]):
            raise ValidationFailed(f"a cos recording needs a region like ap-guangzhou, got {s['region']!r}",
                                   field=f"{FIELD}.region")
        endpoint = s["endpoint"]
        if endpoint:
            ok = url_problem(endpoint) is None if "://" in endpoint else bool(HOST_RE.match(endpoint))
            if not ok:
                raise ValidationFailed(f"bad endpoint {endpoint!r}: a host name or http(s)://host:port",
                                       field=f"{FIELD}.endpoint")
        if not s["access_key"] or not s["secret_key"]:
            missing = "access_key" if not s["access_key"] else "secret_key"
            raise ValidationFailed(f"a cos recording needs {missing} (SecretId/SecretKey), in the request or in "
                                   "[plugins.storage_cos]", field=f"{FIELD}.{missing}")

    def local_dir(self, options: dict[str, Any]) -> None:
        return None

    def _client(self, s: dict[str, Any]) -> Any:
        from qcloud_cos import CosConfig as SdkConfig
        from qcloud_cos import CosS3Client

        cache_key = tuple(s[k] for k in ("endpoint", "region", "access_key", "secret_key"))
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                kwargs: dict[str, Any] = {"Region": s["region"], "SecretId": s["access_key"],
                                          "SecretKey": s["secret_key"], "Scheme": self.config.scheme,
                                          "Timeout": self.config.timeout_s}
                endpoint = s["endpoint"]
                if "://" in endpoint:  # a fixed address; requests still name the bucket's host
                    parts = urlsplit(endpoint)
                    kwargs.update(Scheme=parts.scheme, IP=parts.hostname,
                                  Port=parts.port or (443 if parts.scheme == "https" else 80))
                elif endpoint:
                    kwargs["Endpoint"] = endpoint
                client = CosS3Client(SdkConfig(**kwargs), retry=1)  # the spool retries
                self._clients[cache_key] = client
        return client

    def url_for(self, s: dict[str, Any], key: str) -> str:
        if self.config.public_url:
            return f"{self.config.public_url.rstrip('/')}/{quote(key)}"
        host = s["endpoint"] if s["endpoint"] and "://" not in s["endpoint"] else f"cos.{s['region']}.myqcloud.com"
        return f"https://{s['bucket']}.{host}/{quote(key)}"

    def _upload(self, path: Path, key: str, s: dict[str, Any]) -> None:
        self._client(s).upload_file(Bucket=s["bucket"], Key=key, LocalFilePath=str(path),
                                    PartSize=self.config.part_size_mb, MAXThread=4)

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        s = self.settings(options)
        size = path.stat().st_size
        await run_upload(self._upload, path, key, s, translate=_cos_error)
        return {"backend": self.name, "bucket": s["bucket"], "key": key, "size": size, "url": self.url_for(s, key)}


def _cos_error(exc: BaseException) -> UploadError | None:
    """COS's code and message (or the SDK's own failure), None for anything else."""
    from qcloud_cos.cos_exception import CosClientError, CosServiceError

    if isinstance(exc, CosServiceError):
        code = str(exc.get_error_code() or exc.get_status_code() or "cos_error")
        return UploadError(str(exc.get_error_msg() or code), code=code, retry=code not in PERMANENT)
    if isinstance(exc, CosClientError):
        return UploadError(str(exc), code="cos_client_error")
    return None


class CosStoragePlugin:
    config_model = CosConfig
    config: CosConfig

    def __init__(self) -> None:
        self.config = CosConfig()

    @hookimpl
    def mediagate_storage_backends(self, node: Node) -> list[CosStorage]:
        return [CosStorage(self.config)]
