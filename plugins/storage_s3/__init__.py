"""Storage backend ``s3``: any S3-compatible object store (AWS, MinIO, SeaweedFS, Ceph, R2…).

boto3 does the signing (SigV4) and the multipart upload of large files; its calls block, so
they run on a worker thread. A request's ``record.storage`` fields override the
``[plugins.storage_s3]`` section field by field (empty fields fall back to it), so an operator
can keep the credentials in the config and let requests name only a bucket or a prefix.
"""

from __future__ import annotations

import mimetypes
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import ValidationFailed
from gateway.hookspecs import hookimpl
from gateway.storage import UploadError, check_prefix, merge_settings, run_upload, url_problem
from gateway.storage import upload_error as storage_upload_error

if TYPE_CHECKING:
    from gateway.node import Node

FIELD = "record.storage"
# S3 error codes retrying cannot fix: credentials or the bucket are wrong
PERMANENT = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoSuchBucket", "InvalidBucketName",
             "AuthorizationHeaderMalformed", "InvalidArgument", "AllAccessDisabled", "AccountProblem"}
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class S3Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field("", description="http(s)://host[:port]; empty = AWS S3 of the region")
    region: str = Field("us-east-1", description="signing region")
    bucket: str = Field("", description="default bucket")
    access_key: str = Field("", description="default access key; empty = boto3's own chain (env, profile, role)")
    secret_key: str = Field("", repr=False, description="default secret key")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="path: endpoint/bucket/key; virtual: bucket.endpoint/key")
    multipart_threshold_mb: float = Field(16, ge=5, description="files at least this large go in parts")
    multipart_chunk_mb: float = Field(8, ge=5, description="part size (S3 refuses parts under 5 MB)")
    connect_timeout_s: float = Field(5, gt=0)
    read_timeout_s: float = Field(60, gt=0)
    public_url: str = Field("", description="base of the URLs reported for stored objects; empty = endpoint/bucket")


class S3Storage:
    name = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def settings(self, options: dict[str, Any]) -> dict[str, Any]:
        return merge_settings(self.config, options)

    def validate(self, options: dict[str, Any]) -> None:
        check_prefix(options)
        settings = self.settings(options)
        if not settings["bucket"]:
            raise ValidationFailed("an s3 recording needs a bucket (record.storage.bucket or "
                                   "[plugins.storage_s3] bucket)", field=f"{FIELD}.bucket")
        if not BUCKET_RE.match(settings["bucket"]):
            raise ValidationFailed(f"bad bucket name {settings['bucket']!r}: 3-63 lowercase letters, digits, "
                                   "dots and hyphens", field=f"{FIELD}.bucket")
        if settings["endpoint"] and (problem := url_problem(settings["endpoint"])):
            raise ValidationFailed(f"bad endpoint {settings['endpoint']!r}: {problem}", field=f"{FIELD}.endpoint")
        if bool(settings["access_key"]) != bool(settings["secret_key"]):
            missing = "secret_key" if settings["access_key"] else "access_key"
            raise ValidationFailed(f"access_key and secret_key go together; {missing} is missing",
                                   field=f"{FIELD}.{missing}")

    def local_dir(self, options: dict[str, Any]) -> None:
        return None

    def _client(self, settings: dict[str, Any]) -> Any:
        import boto3
        from botocore.config import Config

        cache_key = tuple(settings[k] for k in ("endpoint", "region", "access_key", "secret_key"))
        with self._lock:  # boto3 sessions are not thread-safe to create from; clients are to use
            client = self._clients.get(cache_key)
            if client is None:
                session = boto3.session.Session()
                cfg = Config(region_name=settings["region"] or None, signature_version="s3v4",
                             s3={"addressing_style": self.config.addressing_style},
                             connect_timeout=self.config.connect_timeout_s, read_timeout=self.config.read_timeout_s,
                             retries={"max_attempts": 2, "mode": "standard"},  # the spool retries
                             # S3-compatible servers do not all know the newer default checksums
                             request_checksum_calculation="when_required",
                             response_checksum_validation="when_required")
                client = session.client("s3", endpoint_url=settings["endpoint"] or None,
                                        aws_access_key_id=settings["access_key"] or None,
                                        aws_secret_access_key=settings["secret_key"] or None, config=cfg)
                self._clients[cache_key] = client
        return client

    def url_for(self, settings: dict[str, Any], key: str) -> str:
        quoted = quote(key)
        if self.config.public_url:
            return f"{self.config.public_url.rstrip('/')}/{quoted}"
        bucket = settings["bucket"]
        endpoint = settings["endpoint"].rstrip("/")
        if not endpoint:
            return f"https://{bucket}.s3.{settings['region'] or 'us-east-1'}.amazonaws.com/{quoted}"
        if self.config.addressing_style == "virtual":
            parts = urlsplit(endpoint)
            return f"{parts.scheme}://{bucket}.{parts.netloc}/{quoted}"
        return f"{endpoint}/{bucket}/{quoted}"

    def _upload(self, path: Path, key: str, settings: dict[str, Any]) -> None:
        from boto3.s3.transfer import TransferConfig

        mb = 1024 * 1024
        transfer = TransferConfig(multipart_threshold=int(self.config.multipart_threshold_mb * mb),
                                  multipart_chunksize=int(self.config.multipart_chunk_mb * mb), max_concurrency=4)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._client(settings).upload_file(str(path), settings["bucket"], key, Config=transfer,
                                           ExtraArgs={"ContentType": content_type})

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings(options)
        size = path.stat().st_size
        await run_upload(self._upload, path, key, settings, translate=_s3_error)
        return {"backend": self.name, "bucket": settings["bucket"], "key": key, "size": size,
                "url": self.url_for(settings, key)}


def _s3_error(exc: BaseException) -> UploadError | None:
    """The S3 server's code and message (or boto's own failure), None for anything else."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "s3_error")
        return UploadError(str(error.get("Message") or exc), code=code, retry=code not in PERMANENT)
    if isinstance(exc, BotoCoreError):
        return UploadError(str(exc), code=type(exc).__name__)
    return None


def upload_error(exc: BaseException) -> UploadError:
    """The S3 server's code and message, from boto3's wrapped exceptions."""
    return storage_upload_error(exc, _s3_error)


class S3StoragePlugin:
    config_model = S3Config
    config: S3Config

    def __init__(self) -> None:
        self.config = S3Config()

    @hookimpl
    def mediagate_storage_backends(self, node: Node) -> list[S3Storage]:
        return [S3Storage(self.config)]
