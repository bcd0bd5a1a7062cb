"""S3 backend (boto3): server-side encryption, single-pass hashing, no partial objects.

* ``put`` reads 1 MiB chunks, hashes each once and buffers one part. An object that fits
  in the first part is written with one ``PutObject`` after its digest was checked; larger
  objects use a multipart upload that is *completed* only after the digest matched and is
  aborted on any failure (mismatch, size limit, client disconnect, S3 error), so no object
  and no dangling upload is left behind. Part size starts at 8 MiB and doubles every 1000
  parts (S3 allows 10000), so memory stays at about one part whatever the object size.
* Every object we write carries ``ServerSideEncryption`` (``AES256`` or ``aws:kms`` with a
  key id). There is no master key of ours to rotate: KMS rotates its keys itself.
* Identity binding: S3 encrypts server-side, so there is no associated data of ours. Every
  object we write carries user metadata ``helixgate-object-id`` and ``helixgate-size``;
  every read compares them with the database row (``StoredBlob.object_id``/``size``) before a
  byte is served, so a row pointing at another object's key (swapped rows) or an object
  replaced under our key fails with ``IntegrityError``; the bytes are then re-hashed against
  the row's checksum as before. Objects written before the binding and external objects
  carry no such metadata and are checked by size and checksum only.
* A missing object or bucket on read is ``MissingData`` (an integrity failure), not a 404.
* ``register_external`` streams an existing ``s3://bucket/key`` once to compute its SHA-256
  and records a reference (no copy). Allowed buckets: our own bucket (outside our object
  prefix) and those passed as ``registration_buckets``. We never delete external objects;
  reads re-verify them, so an object changed behind our back raises IntegrityError.
* Calls retry with botocore's ``standard`` mode (bounded attempts, exponential backoff with
  jitter); what still fails becomes ``UpstreamError`` naming the operation and the S3 code.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from drs_store.storage import (
    CHUNK,
    MissingData,
    StoredBlob,
    check_backend,
    check_limit,
    check_ttl,
    prepare_expected,
    resolve_range,
    verify_stream,
)
from helixgate.errors import (
    BadRequest,
    ConfigurationError,
    Forbidden,
    IntegrityError,
    NotFound,
    UpstreamError,
)
from helixgate.integrity import check_sha256

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
META_ID = "helixgate-object-id"
META_SIZE = "helixgate-size"


class S3Storage:
    """Objects in one S3 bucket under ``prefix``; thread-safe (one boto3 client)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        sse: Literal["AES256", "aws:kms"] = "AES256",
        kms_key_id: str | None = None,
        registration_buckets: frozenset[str] = frozenset(),
        prefix: str = "objects/",
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        part_size: int = PART_SIZE,
    ) -> None:
        if not _BUCKET.match(bucket):
            raise ConfigurationError(f"invalid setting s3_bucket: {bucket!r} is not a valid bucket name")
        if sse not in ("AES256", "aws:kms"):
            raise ConfigurationError(f"invalid setting s3_sse: {sse!r} is not AES256 or aws:kms")
        if sse == "aws:kms" and not kms_key_id:
            raise ConfigurationError("invalid setting s3_kms_key_id: required for aws:kms")
        if not 5 * 1024 * 1024 <= part_size <= 5 * 1024**3:
            raise ConfigurationError(f"S3 part size must be between 5 MiB and 5 GiB, got {part_size}")
        self.bucket = bucket
        self._prefix = prefix
        self._sse = sse
        self._kms_key_id = kms_key_id if sse == "aws:kms" else None
        self._registration_buckets = frozenset(registration_buckets) | {bucket}
        self._part_size = part_size
        options: dict[str, Any] = {
            "retries": {"max_attempts": max_attempts, "mode": "standard"},
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "signature_version": "s3v4",
        }
        if endpoint_url:
            options["s3"] = {"addressing_style": "path"}  # custom endpoints (moto, MinIO) rarely do virtual hosts
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=Config(**options)
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, sse={self._sse!r})"

    # ------------------------------------------------------------------ write
    def put(
        self,
        stream: BinaryIO,
        *,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
        object_id: str = "",
    ) -> StoredBlob:
        expected = prepare_expected(expected_sha256)
        key = self._prefix + uuid.uuid4().hex
        sse: dict[str, Any] = dict(self._sse_args())
        sha = hashlib.sha256()
        size = 0
        buf = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            part_size = self._current_part_size(0)
            while True:
                # Never read past the part boundary: the buffer holds exactly one part.
                chunk = stream.read(min(CHUNK, part_size - len(buf)))
                if not chunk:
                    break
                size += len(chunk)
                check_limit(size, max_bytes)
                sha.update(chunk)
                buf += chunk
                if len(buf) >= part_size:
                    if upload_id is None:  # metadata binds the final size: known only at the end
                        sse["Metadata"] = {META_ID: object_id}
                        upload_id = self._call(
                            "CreateMultipartUpload",
                            self._client.create_multipart_upload,
                            Bucket=self.bucket,
                            Key=key,
                            **sse,
                        )["UploadId"]
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, buf))
                    buf.clear()
                    part_size = self._current_part_size(len(parts))
            digest = sha.hexdigest()
            if expected is not None:
                check_sha256("uploaded object", expected, digest)
            if upload_id is None:
                sse["Metadata"] = {META_ID: object_id, META_SIZE: str(size)}
                self._call("PutObject", self._client.put_object, Bucket=self.bucket, Key=key, Body=bytes(buf), **sse)
            else:
                if buf:
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, buf))
                    buf.clear()
                self._call(
                    "CompleteMultipartUpload",
                    self._client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                self._abort(key, upload_id)
            raise
        return StoredBlob("s3", key, size, digest, self._kms_key_id, object_id=object_id)

    def _current_part_size(self, done: int) -> int:
        return self._part_size << (done // 1000)

    def _upload_part(self, key: str, upload_id: str, number: int, body: bytearray) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise BadRequest(f"object too large for S3: more than {MAX_PARTS} parts")
        resp = self._call(
            "UploadPart",
            self._client.upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:
            # The bucket's lifecycle rule for incomplete uploads is the backstop; never visible as an object.
            log.warning("could not abort multipart upload of s3://%s/%s: %s", self.bucket, key, type(exc).__name__)

    def register_external(self, url: str, *, expected_sha256: str | None = None) -> StoredBlob:
        expected = prepare_expected(expected_sha256)
        bucket, key = _parse_s3_url(url)
        if bucket not in self._registration_buckets:
            raise Forbidden(f"bucket {bucket!r} is not allowed for registration in place")
        if bucket == self.bucket and key.startswith(self._prefix):
            raise Forbidden("objects managed by the data store cannot be registered again")
        resp = self._call("GetObject", self._client.get_object, Bucket=bucket, Key=key, missing=url)
        sha = hashlib.sha256()
        size = 0
        for chunk in self._iter_body(resp, "GetObject"):
            sha.update(chunk)
            size += len(chunk)
        digest = sha.hexdigest()
        if expected is not None:
            check_sha256(url, expected, digest)
        return StoredBlob("s3", f"s3://{bucket}/{key}", size, digest, resp.get("SSEKMSKeyId"), external=True)

    # ------------------------------------------------------------------- read
    def open_range(self, blob: StoredBlob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_backend(blob, self.name)
        start, stop = resolve_range(blob, start, end)
        bucket, key = self._bucket_key(blob)
        if start == stop:
            head = self._read_call("HeadObject", self._client.head_object, blob, Bucket=bucket, Key=key)
            self._check_identity(blob, head)
            return iter(())
        resp = self._read_call(
            "GetObject", self._client.get_object, blob, Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}"
        )
        self._check_identity(blob, resp, closing=resp.get("Body"))
        return self._exact(blob, self._iter_body(resp, "GetObject"), stop - start)

    def read_verified(self, blob: StoredBlob) -> Iterator[bytes]:
        check_backend(blob, self.name)
        bucket, key = self._bucket_key(blob)
        resp = self._read_call("GetObject", self._client.get_object, blob, Bucket=bucket, Key=key)
        self._check_identity(blob, resp, closing=resp.get("Body"))
        return verify_stream(blob, self._iter_body(resp, "GetObject"))

    def _read_call(self, op: str, fn: Callable[..., Any], blob: StoredBlob, **kwargs: Any) -> Any:
        try:
            return self._call(op, fn, missing=blob.location, **kwargs)
        except NotFound:
            raise MissingData(
                f"stored data of object {blob.object_id or blob.location} is missing (s3 key {blob.location})",
                subject=blob.object_id or blob.location,
                expected="the stored object",
                actual="missing",
            ) from None

    @staticmethod
    def _check_identity(blob: StoredBlob, resp: Mapping[str, Any], closing: Any = None) -> None:
        """The object's own metadata must name the row's object id and size (when we wrote it)."""
        meta = {str(k).lower(): str(v) for k, v in (resp.get("Metadata") or {}).items()}
        problems: list[tuple[str, str, str]] = []
        if META_ID in meta and meta[META_ID] != blob.object_id:
            problems.append(("object id", blob.object_id, meta[META_ID]))
        if META_SIZE in meta and meta[META_SIZE] != str(blob.size):
            problems.append(("size", str(blob.size), meta[META_SIZE]))
        length = resp.get("ContentLength")
        if "ContentRange" not in resp and isinstance(length, int) and length != blob.size:
            problems.append(("size", str(blob.size), str(length)))
        if problems:
            if closing is not None:
                closing.close()
            what, expected, actual = problems[0]
            raise IntegrityError(
                f"s3 object {blob.location} is not the bytes of object {blob.object_id or blob.location}: "
                f"stored {what} is {actual}, expected {expected}",
                subject=blob.object_id or blob.location,
                expected=expected,
                actual=actual,
            )

    @staticmethod
    def _exact(blob: StoredBlob, chunks: Iterator[bytes], want: int) -> Iterator[bytes]:
        got = 0
        for chunk in chunks:
            got += len(chunk)
            if got > want:
                break
            yield chunk
        if got != want:
            raise IntegrityError(
                f"range read of {blob.location} returned {got} bytes, expected {want}",
                subject=blob.location,
                expected=str(want),
                actual=str(got),
            )

    def _iter_body(self, resp: dict[str, Any], op: str) -> Iterator[bytes]:
        body = resp["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, Urllib3Error, OSError) as exc:
            log.warning("S3 %s stream failed: %s", op, type(exc).__name__)
            raise UpstreamError(f"S3 {op} failed while streaming: {type(exc).__name__}") from None
        finally:
            body.close()

    # ------------------------------------------------------------ management
    def delete(self, blob: StoredBlob) -> None:
        """Delete an object we wrote. External objects belong to someone else: only the reference goes."""
        check_backend(blob, self.name)
        if blob.external:
            return
        bucket, key = self._bucket_key(blob)
        self._call("DeleteObject", self._client.delete_object, Bucket=bucket, Key=key)

    def presign(self, blob: StoredBlob, ttl: int) -> str | None:
        check_backend(blob, self.name)
        check_ttl(ttl)
        bucket, key = self._bucket_key(blob)
        # the client reads S3 directly: check this key holds this object before handing it out
        head = self._read_call("HeadObject", self._client.head_object, blob, Bucket=bucket, Key=key)
        self._check_identity(blob, head)
        url: str = self._call(
            "PresignGetObject",
            self._client.generate_presigned_url,
            ClientMethod="get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=ttl,
        )
        return url

    def rotate_master_key(self) -> str:
        raise BadRequest(
            "the s3 backend has no master key of its own: objects use S3 server-side encryption "
            "(rotate the KMS key in KMS)"
        )

    # ---------------------------------------------------------------- private
    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {"ServerSideEncryption": self._sse}
        if self._kms_key_id:
            args["SSEKMSKeyId"] = self._kms_key_id
        return args

    def _bucket_key(self, blob: StoredBlob) -> tuple[str, str]:
        if blob.external:
            return _parse_s3_url(blob.location)
        if not blob.location.startswith(self._prefix):
            raise BadRequest("invalid s3 object location")
        return self.bucket, blob.location

    def _call(self, op: str, fn: Callable[..., Any], *, missing: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "unknown"))
            if missing is not None and code in _MISSING:
                raise NotFound(f"stored data for {missing} not found") from None
            log.warning("S3 %s on bucket %s failed: %s", op, kwargs.get("Bucket", "?"), code)
            raise UpstreamError(f"S3 {op} failed: {code}") from None
        except BotoCoreError as exc:
            log.warning("S3 %s failed after retries: %s", op, type(exc).__name__)
            raise UpstreamError(f"S3 {op} failed after retries: {type(exc).__name__}") from None


def _parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). Keys are taken verbatim (they may hold '?' or '#')."""
    if not url.startswith("s3://"):
        raise BadRequest("expected an s3://bucket/key URL")
    bucket, sep, key = url[len("s3://") :].partition("/")
    if not sep or not key or not _BUCKET.match(bucket) or len(key.encode()) > 1024:
        raise BadRequest(f"invalid S3 URL {url[:200]!r}: expected s3://bucket/key")
    return bucket, key
