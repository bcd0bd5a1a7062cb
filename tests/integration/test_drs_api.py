"""The DRS 1.5.0 API and its write extension over HTTP, on SQLite and PostgreSQL, with the
local (encrypted) and the S3 (moto server) storage backends. Responses are checked against
the official DRS 1.5.0 schemas."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3  # type: ignore[import-untyped]
import pytest
import requests
from sqlalchemy import func, select

from drs_store.domain import DrsStore, bundle_checksum
from drs_store.local_storage import HEADER_SIZE
from drs_store.models import ObjectRow
from tests.fixtures.app import Harness
from tests.fixtures.ga4gh_schemas import validate

pytestmark = pytest.mark.integration

BASE = "/ga4gh/drs/v1"
OCTET = {"Content-Type": "application/octet-stream"}
MIB = 1024 * 1024


@dataclass
class Env:
    backend: str
    factory: Callable[..., Harness]
    overrides: dict[str, Any] = field(default_factory=dict)
    s3: Any = None
    bucket: str | None = None
    _h: Harness | None = None

    def harness(self, **more: Any) -> Harness:
        return self.factory(services=("drs", "core"), **self.overrides, **more)

    @property
    def h(self) -> Harness:
        if self._h is None:
            self._h = self.harness()
        return self._h

    def upload(self, h: Harness, headers: dict[str, str], data: bytes, **params: Any) -> Any:
        return h.client.post(f"{BASE}/x-helixgate/objects", params=params, content=data, headers={**headers, **OCTET})

    def row(self, h: Harness, object_id: str) -> ObjectRow | None:
        with h.platform.db.session() as s:
            return s.get(ObjectRow, object_id)

    def stored(self, h: Harness) -> list[str]:
        """Everything the backend holds, partial uploads included."""
        if self.backend == "local":
            root = h.platform.settings.data_dir / "drs" / "objects"
            return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])]
        uploads = [u["Key"] for u in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]
        return sorted(keys + uploads)

    def tamper(self, h: Harness, object_id: str, *, offset_from_end: int | None = None) -> None:
        """Flip one stored byte behind the store's back."""
        row = self.row(h, object_id)
        assert row is not None and row.location
        if self.backend == "local":
            path = h.platform.settings.data_dir / "drs" / "objects" / row.location[:2] / f"{row.location}.blob"
            raw = bytearray(path.read_bytes())
            raw[len(raw) - offset_from_end if offset_from_end else HEADER_SIZE + 3] ^= 0x01
            path.write_bytes(bytes(raw))
        else:
            raw = bytearray(self.s3.get_object(Bucket=self.bucket, Key=row.location)["Body"].read())
            raw[len(raw) - offset_from_end if offset_from_end else 3] ^= 0x01
            self.s3.put_object(Bucket=self.bucket, Key=row.location, Body=bytes(raw), ServerSideEncryption="AES256")


@pytest.fixture(params=["local", "s3"])
def env(request: pytest.FixtureRequest, harness_factory: Callable[..., Harness]) -> Env:
    if request.param == "local":
        return Env("local", harness_factory)
    moto_url = request.getfixturevalue("aws_env")
    bucket = "drs-api-" + uuid.uuid4().hex[:16]
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    overrides = {"storage_backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto_url}
    return Env("s3", harness_factory, overrides, client, bucket)


@pytest.fixture()
def s3_env(request: pytest.FixtureRequest, harness_factory: Callable[..., Harness]) -> Env:
    moto_url = request.getfixturevalue("aws_env")
    bucket = "drs-api-" + uuid.uuid4().hex[:16]
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    overrides = {"storage_backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto_url}
    return Env("s3", harness_factory, overrides, client, bucket)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _https_url(h: Harness, headers: dict[str, str], object_id: str) -> str:
    r = h.client.get(f"{BASE}/objects/{object_id}/access/https", headers=headers)
    assert r.status_code == 200, r.text
    validate("drs", "AccessURL", r.json())
    return _path(r.json()["url"])


def _error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    validate("drs", "Error", body)
    assert body["status_code"] == status
    return str(body["msg"])


def _dataset(h: Harness, headers: dict[str, str], public: bool = False) -> str:
    r = h.client.post(f"{BASE}/x-helixgate/datasets", json={"name": "cohort A", "public": public}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# ----------------------------------------------------------------------------- upload and integrity
def test_upload_records_the_servers_sha256_and_validates(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(3 * MIB + 17)  # several chunks / one S3 part
    r = env.upload(h, steward, data, name="reads.bam", mime_type="application/octet-stream", description="run 1")
    assert r.status_code == 201, r.text
    created = r.json()
    validate("drs", "DrsObject", created)
    object_id = created["id"]
    assert len(object_id) == 32 and "/" not in object_id

    r = h.client.get(f"{BASE}/objects/{object_id}", headers=steward)
    assert r.status_code == 200
    obj = r.json()
    validate("drs", "DrsObject", obj)
    assert obj["checksums"] == [{"type": "sha-256", "checksum": hashlib.sha256(data).hexdigest()}]
    assert obj["size"] == len(data)
    assert obj["self_uri"] == f"drs://{h.platform.settings.drs_host}/{object_id}"
    methods = {m["type"]: m for m in obj["access_methods"]}
    assert set(methods) == ({"https", "s3"} if env.backend == "s3" else {"https"})
    assert methods["https"]["available"] is True

    row = env.row(h, object_id)
    assert row is not None and row.backend == env.backend and row.location and row.owner == "steward"
    if env.backend == "local":
        assert row.key_id and row.key_id.startswith("mk-")

    got = h.client.get(_https_url(h, steward, object_id))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data))

    audit, _ = h.platform.audit.query(category="change", action_prefix="drs.object.create", target=object_id)
    assert audit and audit[0].actor == "steward" and audit[0].details["sha256"] == hashlib.sha256(data).hexdigest()


def test_wrong_client_checksum_stores_nothing(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(MIB + 5)
    wrong = hashlib.sha256(b"something else").hexdigest()
    before = env.stored(h)
    msg = _error(env.upload(h, steward, data, name="x.bin", sha256=wrong), 422)
    assert wrong in msg and hashlib.sha256(data).hexdigest() in msg  # expected vs actual
    assert env.stored(h) == before
    with h.platform.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ObjectRow)) == 0
    events, _ = h.platform.audit.query(category="security", action_prefix="drs.upload.checksum_mismatch")
    assert events
    # the right checksum in any accepted spelling is accepted
    good = "sha256:" + hashlib.sha256(data).hexdigest().upper()
    assert env.upload(h, steward, data, sha256=good).status_code == 201


def test_malformed_client_checksum_is_400_before_reading(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    _error(env.upload(h, steward, b"abc", sha256="not-a-digest"), 400)
    assert env.stored(h) == []


def test_request_shapes_are_refused_by_the_openapi_document(env: Env) -> None:
    """Types, required fields and minimum sizes are the document's to check (connexion): the
    handlers do not repeat them, and nothing is written."""
    h = env.h
    steward = h.auth("steward", "data-steward")
    x = f"{BASE}/x-helixgate"
    assert "is not of type 'string'" in _error(h.client.post(f"{x}/datasets", json={"name": 5}, headers=steward), 400)
    assert "non-empty" in _error(h.client.post(f"{x}/datasets", json={"name": ""}, headers=steward), 400)
    bad_member = {"contents": [{"name": "a", "id": 5}]}
    assert "is not of type 'string'" in _error(h.client.post(f"{x}/bundles", json=bad_member, headers=steward), 400)
    assert "'url' is a required property" in _error(
        h.client.post(f"{x}/registrations", json={"name": "a"}, headers=steward), 400
    )
    assert "is not of type 'boolean'" in _error(
        h.client.post(f"{x}/registrations", json={"url": "s3://b/k", "public": "yes"}, headers=steward), 400
    )
    with h.platform.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ObjectRow)) == 0


def test_flipped_stored_byte_is_refused_quarantined_and_audited(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(64 * 1024)  # one chunk: verified before the first byte leaves
    object_id = env.upload(h, steward, data, name="small.bin").json()["id"]
    url = _https_url(h, steward, object_id)
    env.tamper(h, object_id)

    msg = _error(h.client.get(url), 422)
    assert object_id in msg or "stored object" in msg or "sha256 mismatch" in msg
    row = env.row(h, object_id)
    assert row is not None and row.quarantined_at is not None and row.quarantine_reason
    events, _ = h.platform.audit.query(category="security", action_prefix="drs.integrity.failure", target=object_id)
    assert len(events) == 1 and events[0].severity >= 8
    assert events[0].actor == "steward"  # the user the URL was issued to

    # quarantined: metadata still answers, every byte access is refused with a clear error
    obj = h.client.get(f"{BASE}/objects/{object_id}", headers=steward).json()
    validate("drs", "DrsObject", obj)
    assert all(m["available"] is False for m in obj["access_methods"])
    assert "quarantined" in _error(h.client.get(f"{BASE}/objects/{object_id}/access/https", headers=steward), 409)
    assert "quarantined" in _error(h.client.get(url), 409)


def test_tampered_large_object_stream_aborts(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(20 * MIB + 100)  # several 8 MiB read pieces (local) / 1 MiB parts (S3)
    object_id = env.upload(h, steward, data).json()["id"]
    url = _https_url(h, steward, object_id)
    env.tamper(h, object_id, offset_from_end=40)  # damage the end: the first pieces stream out first
    try:
        r = h.client.get(url)
        received = r.content
    except Exception:  # the transport may surface the aborted stream as an error
        received = b""
    assert received != data and len(received) < len(data)  # the last piece is never released
    row = env.row(h, object_id)
    assert row is not None and row.quarantined_at is not None
    events, _ = h.platform.audit.query(category="security", action_prefix="drs.integrity.failure", target=object_id)
    assert events


def test_upload_size_limit(env: Env) -> None:
    h = env.harness(max_upload_bytes=1000)
    steward = h.auth("steward", "data-steward")
    msg = _error(env.upload(h, steward, b"x" * 1001), 413)
    assert "1000" in msg
    # a chunked body (no Content-Length) is cut off at the limit
    r = h.client.post(
        f"{BASE}/x-helixgate/objects",
        content=iter([b"y" * 600, b"y" * 600]),
        headers={**steward, **OCTET},
    )
    _error(r, 413)
    assert env.stored(h) == []
    assert env.upload(h, steward, b"z" * 1000).status_code == 201


def test_chunked_upload_without_content_length(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    parts = [os.urandom(300_000) for _ in range(5)]
    r = h.client.post(f"{BASE}/x-helixgate/objects", content=iter(parts), headers={**steward, **OCTET})
    assert r.status_code == 201, r.text
    assert r.json()["size"] == sum(map(len, parts))
    assert r.json()["checksums"][0]["checksum"] == hashlib.sha256(b"".join(parts)).hexdigest()


# ----------------------------------------------------------------------------- access control
def test_read_requires_a_grant_and_revocation_takes_effect(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    ds = _dataset(h, steward)
    data = b"genome" * 100
    object_id = env.upload(h, steward, data, dataset_id=ds, name="g.vcf").json()["id"]

    assert "alice may not read" in _error(h.client.get(f"{BASE}/objects/{object_id}", headers=alice), 403)
    _error(h.client.get(f"{BASE}/objects/{object_id}/access/https", headers=alice), 403)
    _error(h.client.get(f"{BASE}/objects/{object_id}"), 401)  # anonymous

    # only stewards may grant, and only on their own dataset
    _error(h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=alice), 403)
    other = h.auth("other-steward", "data-steward")
    _error(h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=other), 403)
    r = h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=steward)
    assert r.status_code == 201 and r.json()["username"] == "alice"
    again = h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=steward)
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    _error(h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "nobody"}, headers=steward), 400)

    obj = h.client.get(f"{BASE}/objects/{object_id}", headers=alice)
    assert obj.status_code == 200
    validate("drs", "DrsObject", obj.json())
    url = _https_url(h, alice, object_id)
    assert h.client.get(url).content == data
    assert h.client.get(f"{BASE}/x-helixgate/datasets/{ds}", headers=alice).status_code == 200
    grants = h.client.get(f"{BASE}/x-helixgate/datasets/{ds}/grants", headers=steward).json()["grants"]
    assert [g["username"] for g in grants] == ["alice"]

    assert h.client.delete(f"{BASE}/x-helixgate/datasets/{ds}/grants/alice", headers=steward).status_code == 204
    _error(h.client.get(f"{BASE}/objects/{object_id}", headers=alice), 403)
    _error(h.client.get(url), 403)  # a URL issued before the revocation stops working at once
    history = h.client.get(
        f"{BASE}/x-helixgate/datasets/{ds}/grants", params={"include_revoked": "true"}, headers=steward
    ).json()["grants"]
    assert history[0]["revoked_by"] == "steward"
    changes, _ = h.platform.audit.query(category="change", action_prefix="drs.grant.", target=ds)
    assert {c.action for c in changes} == {"drs.grant.create", "drs.grant.revoke"}


def test_hide_existence_answers_404_and_records_the_denial(env: Env) -> None:
    h = env.harness(drs_hide_existence=True)
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    object_id = env.upload(h, steward, b"secret").json()["id"]
    denied = _error(h.client.get(f"{BASE}/objects/{object_id}", headers=alice), 404)
    missing = _error(h.client.get(f"{BASE}/objects/{uuid.uuid4().hex}", headers=alice), 404)
    assert denied.replace(object_id, "ID").startswith("object not found")
    assert missing.startswith("object not found")
    events, _ = h.platform.audit.query(category="security", action_prefix="drs.access.denied", target=object_id)
    assert events and events[0].actor == "alice"
    # OPTIONS gives the same answer whether the object exists or not
    a = h.client.options(f"{BASE}/objects/{object_id}").json()
    b = h.client.options(f"{BASE}/objects/{uuid.uuid4().hex}").json()
    assert a["supported_types"] == b["supported_types"]


def test_public_dataset_is_readable_anonymously(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    ds = _dataset(h, steward, public=True)
    object_id = env.upload(h, steward, b"open data", dataset_id=ds).json()["id"]
    r = h.client.get(f"{BASE}/objects/{object_id}")
    assert r.status_code == 200
    assert "None" in r.json()["access_methods"][0]["authorizations"]["supported_types"]
    url = h.client.get(f"{BASE}/objects/{object_id}/access/https").json()["url"]
    assert "u=" not in url
    assert h.client.get(_path(url)).content == b"open data"
    opts = h.client.options(f"{BASE}/objects/{object_id}")
    validate("drs", "Authorizations", opts.json())
    assert opts.json()["supported_types"][0] == "None"


def test_options_and_passport_in_body(env: Env) -> None:
    h = env.h
    token = h.user("steward", "data-steward")
    steward = {"Authorization": f"Bearer {token}"}
    object_id = env.upload(h, steward, b"abc").json()["id"]
    opts = h.client.options(f"{BASE}/objects/{object_id}")
    assert opts.status_code == 200
    validate("drs", "Authorizations", opts.json())
    assert set(opts.json()["supported_types"]) == {"BearerAuth", "PassportAuth"}
    _error(h.client.options(f"{BASE}/objects/{uuid.uuid4().hex}"), 404)

    # PassportAuth: the token travels in the body, no Authorization header
    r = h.client.post(f"{BASE}/objects/{object_id}", json={"passports": [token], "expand": False})
    assert r.status_code == 200, r.text
    validate("drs", "DrsObject", r.json())
    r = h.client.post(f"{BASE}/objects/{object_id}/access/https", json={"passports": [token]})
    assert r.status_code == 200
    assert h.client.get(_path(r.json()["url"])).content == b"abc"
    _error(h.client.post(f"{BASE}/objects/{object_id}", json={"passports": []}), 401)


# ----------------------------------------------------------------------------- signed URLs and ranges
def test_signed_url_forgery_and_expiry_are_403(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    h.auth("alice", "analyst")
    object_id = env.upload(h, steward, b"0123456789").json()["id"]
    url = _https_url(h, steward, object_id)
    path, query = url.split("?", 1)
    params = {k: v[0] for k, v in parse_qs(query).items()}

    forged_sig = dict(params, sig=params["sig"][:-2] + ("AA" if not params["sig"].endswith("AA") else "BB"))
    assert "invalid" in _error(h.client.get(f"{path}?{urlencode(forged_sig)}"), 403)
    other_user = dict(params, u="alice")
    _error(h.client.get(f"{path}?{urlencode(other_user)}"), 403)
    later = dict(params, exp=str(int(params["exp"]) + 3600))
    _error(h.client.get(f"{path}?{urlencode(later)}"), 403)
    other_object = uuid.uuid4().hex
    _error(h.client.get(f"{BASE}/x-helixgate/stream/{other_object}?{query}"), 403)
    _error(h.client.get(f"{path}?exp=abc&sig=x"), 403)

    store = h.platform.domain(DrsStore)
    expired = store.signer.sign(object_id, "steward", 60, now=time.time() - 120)
    assert "expired" in _error(h.client.get(f"{path}?{urlencode(expired)}"), 403)
    assert h.client.get(url).status_code == 200


def test_range_reads(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(2 * MIB + 333)
    object_id = env.upload(h, steward, data).json()["id"]
    url = _https_url(h, steward, object_id)
    for header, lo, hi in [
        ("bytes=10-19", 10, 20),
        ("bytes=1048570-1048590", 1048570, 1048591),  # across a chunk boundary
        (f"bytes={len(data) - 5}-", len(data) - 5, len(data)),
        ("bytes=-7", len(data) - 7, len(data)),
        (f"bytes=100-{len(data) * 2}", 100, len(data)),
    ]:
        r = h.client.get(url, headers={"Range": header})
        assert r.status_code == 206, (header, r.text)
        assert r.content == data[lo:hi], header
        assert r.headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(data)}"
        assert r.headers["content-length"] == str(hi - lo)
    r = h.client.get(url, headers={"Range": f"bytes={len(data)}-"})
    _error(r, 416)
    assert r.headers["content-range"] == f"bytes */{len(data)}"
    full = h.client.get(url, headers={"Range": "bytes=0-1,5-6"})  # multiple ranges: whole object
    assert full.status_code == 200 and full.content == data


# ----------------------------------------------------------------------------- bulk
def test_bulk_resolve_access_and_limit(env: Env) -> None:
    h = env.harness(drs_bulk_limit=3)
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    ids = [env.upload(h, steward, f"obj {i}".encode()).json()["id"] for i in range(3)]
    mine = env.upload(h, alice, b"", name="empty") if False else None  # analysts cannot upload
    assert mine is None
    _error(env.upload(h, alice, b"x"), 403)

    missing = uuid.uuid4().hex
    r = h.client.post(f"{BASE}/objects", json={"bulk_object_ids": [ids[0], ids[1], missing]}, headers=steward)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"requested": 3, "resolved": 2, "unresolved": 1}
    assert body["unresolved_drs_objects"] == [{"error_code": 404, "object_ids": [missing]}]
    validate("drs", "summary", body["summary"])
    validate("drs", "unresolved", body["unresolved_drs_objects"])
    for obj in body["resolved_drs_object"]:
        validate("drs", "DrsObject", obj)

    denied = h.client.post(f"{BASE}/objects", json={"bulk_object_ids": ids}, headers=alice).json()
    assert denied["unresolved_drs_objects"] == [{"error_code": 403, "object_ids": ids}]

    over = ids + [missing]
    assert "maxBulkRequestLength 3" in _error(
        h.client.post(f"{BASE}/objects", json={"bulk_object_ids": over}, headers=steward), 413
    )
    entries = [{"bulk_object_id": i, "bulk_access_ids": ["https"]} for i in over]
    _error(h.client.post(f"{BASE}/objects/access", json={"bulk_object_access_ids": entries}, headers=steward), 413)
    _error(h.client.request("OPTIONS", f"{BASE}/objects", json={"bulk_object_ids": over}), 413)

    # POST /objects/access is the bulk access operation, not an object called "access"
    r = h.client.post(f"{BASE}/objects/access", json={"bulk_object_access_ids": entries[:3]}, headers=steward)
    assert r.status_code == 200, r.text
    urls = r.json()["resolved_drs_object_access_urls"]
    assert len(urls) == 3
    for u in urls:
        validate("drs", "BulkAccessURL", u)
    assert h.client.get(_path(urls[0]["url"])).content == b"obj 0"

    r = h.client.request("OPTIONS", f"{BASE}/objects", json={"bulk_object_ids": ids[:2] + [missing]})
    assert r.status_code == 200
    for a in r.json()["resolved_drs_object"]:
        validate("drs", "Authorizations", a)
    assert r.json()["unresolved_drs_objects"] == [{"error_code": 404, "object_ids": [missing]}]

    info = h.client.get(f"{BASE}/service-info").json()
    assert info["maxBulkRequestLength"] == 3 and info["drs"]["maxBulkRequestLength"] == 3


def test_malformed_json_is_400(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    object_id = env.upload(h, steward, b"abc").json()["id"]
    js = {**steward, "Content-Type": "application/json"}
    for path in (
        f"{BASE}/objects",
        f"{BASE}/objects/{object_id}",
        f"{BASE}/objects/access",
        f"{BASE}/x-helixgate/bundles",
    ):
        _error(h.client.post(path, content=b'{"bulk_object_ids": [', headers=js), 400)
    _error(h.client.post(f"{BASE}/objects", json={"bulk_object_ids": "nope"}, headers=steward), 400)
    _error(h.client.post(f"{BASE}/objects", json={"bulk_object_ids": []}, headers=steward), 400)


# ----------------------------------------------------------------------------- bundles, delete, lookup
def test_bundles_checksum_and_expand(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    blobs = {name: os.urandom(1000 + i) for i, name in enumerate(["a.bam", "a.bai", "notes.txt"])}
    ids = {n: env.upload(h, steward, d, name=n).json()["id"] for n, d in blobs.items()}
    sums = {n: hashlib.sha256(d).hexdigest() for n, d in blobs.items()}

    r = h.client.post(
        f"{BASE}/x-helixgate/bundles",
        json={
            "name": "pair",
            "contents": [{"name": "reads.bam", "id": ids["a.bam"]}, {"name": "reads.bai", "id": ids["a.bai"]}],
        },
        headers=steward,
    )
    assert r.status_code == 201, r.text
    inner = r.json()
    validate("drs", "DrsObject", inner)
    expected_inner = hashlib.sha256("".join(sorted([sums["a.bam"], sums["a.bai"]])).encode()).hexdigest()
    assert inner["checksums"] == [{"type": "sha-256", "checksum": expected_inner}]
    assert inner["checksums"][0]["checksum"] == bundle_checksum([sums["a.bai"], sums["a.bam"]])
    assert inner["size"] == len(blobs["a.bam"]) + len(blobs["a.bai"])
    assert "access_methods" not in inner

    outer = h.client.post(
        f"{BASE}/x-helixgate/bundles",
        json={
            "name": "study",
            "contents": [{"name": "pair", "id": inner["id"]}, {"name": "notes.txt", "id": ids["notes.txt"]}],
        },
        headers=steward,
    ).json()
    expected_outer = hashlib.sha256("".join(sorted([expected_inner, sums["notes.txt"]])).encode()).hexdigest()
    assert outer["checksums"][0]["checksum"] == expected_outer

    flat = h.client.get(f"{BASE}/objects/{outer['id']}", headers=steward).json()
    validate("drs", "DrsObject", flat)
    assert [c["name"] for c in flat["contents"]] == ["pair", "notes.txt"]
    assert all("contents" not in c for c in flat["contents"])
    assert flat["contents"][0]["drs_uri"] == [f"drs://{h.platform.settings.drs_host}/{inner['id']}"]

    deep = h.client.get(f"{BASE}/objects/{outer['id']}", params={"expand": "true"}, headers=steward).json()
    validate("drs", "DrsObject", deep)
    nested = deep["contents"][0]["contents"]
    assert [(c["name"], c["id"]) for c in nested] == [("reads.bam", ids["a.bam"]), ("reads.bai", ids["a.bai"])]
    for c in deep["contents"]:
        validate("drs", "ContentsObject", c)
    posted = h.client.post(f"{BASE}/objects/{outer['id']}", json={"expand": True}, headers=steward).json()
    assert posted["contents"] == deep["contents"]

    # bundle rules: unique names, readable members, no deleting a member of a live bundle
    dup = [{"name": "x", "id": ids["a.bam"]}, {"name": "x", "id": ids["a.bai"]}]
    _error(h.client.post(f"{BASE}/x-helixgate/bundles", json={"contents": dup}, headers=steward), 400)
    _error(
        h.client.post(
            f"{BASE}/x-helixgate/bundles", json={"contents": [{"name": "q", "id": uuid.uuid4().hex}]}, headers=steward
        ),
        404,
    )
    other = h.auth("other", "data-steward")
    _error(
        h.client.post(
            f"{BASE}/x-helixgate/bundles", json={"contents": [{"name": "q", "id": ids["a.bam"]}]}, headers=other
        ),
        403,
    )
    _error(h.client.delete(f"{BASE}/x-helixgate/objects/{ids['a.bam']}", headers=steward), 409)


def test_soft_delete(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    object_id = env.upload(h, steward, b"to be removed").json()["id"]
    url = _https_url(h, steward, object_id)
    assert env.stored(h) != []
    _error(h.client.delete(f"{BASE}/x-helixgate/objects/{object_id}", headers=alice), 403)  # analysts lack drs:write
    other = h.auth("other", "data-steward")
    _error(h.client.delete(f"{BASE}/x-helixgate/objects/{object_id}", headers=other), 403)

    assert h.client.delete(f"{BASE}/x-helixgate/objects/{object_id}", headers=steward).status_code == 204
    _error(h.client.get(f"{BASE}/objects/{object_id}", headers=steward), 404)
    _error(h.client.get(url), 404)
    _error(h.client.delete(f"{BASE}/x-helixgate/objects/{object_id}", headers=steward), 404)
    row = env.row(h, object_id)
    assert row is not None and row.deleted_at is not None and row.deleted_by == "steward" and row.blob_deleted
    assert env.stored(h) == []  # documented choice: the bytes go, the row stays
    changes, _ = h.platform.audit.query(category="change", action_prefix="drs.object.delete", target=object_id)
    assert changes and changes[0].actor == "steward"
    assert h.client.get(f"{BASE}/service-info").json()["drs"]["objectCount"] == 0


def test_lookup_by_checksum_returns_only_readable_objects(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    data = b"same bytes"
    digest = hashlib.sha256(data).hexdigest()
    ds = _dataset(h, steward)
    granted = env.upload(h, steward, data, dataset_id=ds).json()["id"]
    private = env.upload(h, steward, data).json()["id"]
    h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=steward)

    r = h.client.get(f"{BASE}/x-helixgate/objects", params={"checksum": digest}, headers=steward)
    assert sorted(o["id"] for o in r.json()["objects"]) == sorted([granted, private])
    for o in r.json()["objects"]:
        validate("drs", "DrsObject", o)
    r = h.client.get(f"{BASE}/x-helixgate/objects", params={"checksum": f"sha256:{digest}"}, headers=alice)
    assert [o["id"] for o in r.json()["objects"]] == [granted]
    assert h.client.get(f"{BASE}/x-helixgate/objects", params={"checksum": "0" * 64}, headers=alice).json() == {
        "objects": []
    }
    _error(h.client.get(f"{BASE}/x-helixgate/objects", params={"checksum": "xyz"}, headers=alice), 400)


def test_dataset_listing_shows_only_visible_datasets_and_readable_objects(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(services=("drs", "core"))
    steward = h.auth("steward", "data-steward")
    alice = h.auth("alice", "analyst")
    bob = h.auth("bob", "viewer")
    granted, hidden, public = _dataset(h, steward), _dataset(h, steward), _dataset(h, steward, public=True)
    ids = [
        h.client.post(
            f"{BASE}/x-helixgate/objects", params={"dataset_id": granted, "name": f"o{i}"}, content=b"x%d" % i,
            headers={**steward, **OCTET},
        ).json()["id"]
        for i in range(3)
    ]
    h.client.post(f"{BASE}/x-helixgate/datasets/{granted}/grants", json={"username": "alice"}, headers=steward)

    def listed(headers: dict[str, str]) -> set[str]:
        r = h.client.get(f"{BASE}/x-helixgate/datasets", headers=headers)
        assert r.status_code == 200, r.text
        return {d["id"] for d in r.json()["datasets"]}

    assert listed(steward) == {granted, hidden, public}
    assert listed(alice) == {granted, public}
    assert listed(bob) == {public}
    assert {d["id"] for d in h.client.get(f"{BASE}/x-helixgate/datasets").json()["datasets"]} == {public}

    # pages, oldest first, every object a DrsObject
    seen: list[str] = []
    token = ""
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        r = h.client.get(f"{BASE}/x-helixgate/datasets/{granted}/objects", params=params, headers=alice)
        assert r.status_code == 200, r.text
        for o in r.json()["objects"]:
            validate("drs", "DrsObject", o)
        seen += [o["id"] for o in r.json()["objects"]]
        token = r.json()["next_page_token"]
        if not token:
            break
    assert seen == ids
    _error(h.client.get(f"{BASE}/x-helixgate/datasets/{granted}/objects", headers=bob), 403)
    _error(h.client.get(f"{BASE}/x-helixgate/datasets/{hidden}/objects", headers=alice), 403)
    _error(h.client.get(f"{BASE}/x-helixgate/datasets/{'0' * 32}/objects", headers=alice), 404)
    bad = {"page_token": "-1"}
    _error(h.client.get(f"{BASE}/x-helixgate/datasets/{granted}/objects", params=bad, headers=alice), 400)

    # a revoked grant hides the dataset again
    h.client.delete(f"{BASE}/x-helixgate/datasets/{granted}/grants/alice", headers=steward)
    assert listed(alice) == {public}


# ----------------------------------------------------------------------------- delegation and provenance
def test_delegated_reads_only_for_objects_the_user_can_read(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    h.auth("alice", "analyst")
    h.auth("bob", "analyst")
    service = h.auth(h.platform.settings.service_user, "service")
    ds = _dataset(h, steward)
    object_id = env.upload(h, steward, b"input data", dataset_id=ds).json()["id"]
    h.client.post(f"{BASE}/x-helixgate/datasets/{ds}/grants", json={"username": "alice"}, headers=steward)

    as_alice = {**service, "X-HelixGate-On-Behalf-Of": "alice"}
    as_bob = {**service, "X-HelixGate-On-Behalf-Of": "bob"}
    assert h.client.get(f"{BASE}/objects/{object_id}", headers=as_alice).status_code == 200
    url = _https_url(h, as_alice, object_id)
    assert "u=alice" in url
    assert h.client.get(url).content == b"input data"
    msg = _error(h.client.get(f"{BASE}/objects/{object_id}", headers=as_bob), 403)
    assert "bob" in msg
    _error(h.client.get(f"{BASE}/objects/{object_id}/access/https", headers=as_bob), 403)

    records, _ = h.platform.audit.query(category="request", target=object_id, actor=h.platform.settings.service_user)
    pairs = {(r.actor, r.on_behalf_of, r.outcome) for r in records}
    assert (h.platform.settings.service_user, "alice", "success") in pairs
    assert (h.platform.settings.service_user, "bob", "denied") in pairs

    # only drs:delegate holders may act for someone else
    alice = h.auth("alice", "analyst")
    _error(h.client.get(f"{BASE}/objects/{object_id}", headers={**alice, "X-HelixGate-On-Behalf-Of": "bob"}), 403)


def test_service_uploads_outputs_with_provenance_owned_by_the_user(env: Env) -> None:
    h = env.h
    h.auth("alice", "analyst")
    bob = h.auth("bob", "analyst")
    service = h.auth(h.platform.settings.service_user, "service")
    as_alice = {**service, "X-HelixGate-On-Behalf-Of": "alice"}
    data = b"variant calls\n" * 50
    provenance = {
        "run_id": "run-1",
        "task_id": "call_variants",
        "image_digest": "sha256:" + "ab" * 32,
        "input_checksums": {"reads": "cd" * 32},
    }
    r = env.upload(
        h, as_alice, data, name="calls.vcf", sha256=hashlib.sha256(data).hexdigest(), provenance=json.dumps(provenance)
    )
    assert r.status_code == 201, r.text
    obj = r.json()
    validate("drs", "DrsObject", obj)
    assert obj["provenance"] == provenance
    row = env.row(h, obj["id"])
    assert row is not None and row.owner == "alice" and row.created_by == h.platform.settings.service_user

    alice = h.auth("alice", "analyst")
    assert h.client.get(f"{BASE}/objects/{obj['id']}", headers=alice).json()["provenance"] == provenance
    _error(h.client.get(f"{BASE}/objects/{obj['id']}", headers=bob), 403)
    changes, _ = h.platform.audit.query(category="change", action_prefix="drs.object.create", target=obj["id"])
    assert changes[0].actor == h.platform.settings.service_user and changes[0].on_behalf_of == "alice"
    assert changes[0].details["provenance"]["run_id"] == "run-1"

    for bad in ('{"run_id": "r"}', "not json", '{"run_id": "r", "task_id": "t", "evil": 1}', "[1]"):
        _error(env.upload(h, as_alice, data, provenance=bad), 400)


# ----------------------------------------------------------------------------- S3 specifics
def test_presigned_s3_url_returns_the_bytes(s3_env: Env) -> None:
    h = s3_env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(200_000)
    object_id = s3_env.upload(h, steward, data).json()["id"]
    r = h.client.get(f"{BASE}/objects/{object_id}/access/s3", headers=steward)
    assert r.status_code == 200, r.text
    validate("drs", "AccessURL", r.json())
    fetched = requests.get(r.json()["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == data


def test_register_external_s3_object(s3_env: Env) -> None:
    h = s3_env.h
    steward = h.auth("steward", "data-steward")
    data = os.urandom(50_000)
    s3_env.s3.put_object(Bucket=s3_env.bucket, Key="incoming/sample.cram", Body=data)
    url = f"s3://{s3_env.bucket}/incoming/sample.cram"
    wrong = hashlib.sha256(b"no").hexdigest()
    _error(h.client.post(f"{BASE}/x-helixgate/registrations", json={"url": url, "sha256": wrong}, headers=steward), 422)
    r = h.client.post(f"{BASE}/x-helixgate/registrations", json={"url": url, "name": "sample.cram"}, headers=steward)
    assert r.status_code == 201, r.text
    obj = r.json()
    validate("drs", "DrsObject", obj)
    assert obj["checksums"][0]["checksum"] == hashlib.sha256(data).hexdigest()
    assert h.client.get(_https_url(h, steward, obj["id"])).content == data
    _error(
        h.client.post(f"{BASE}/x-helixgate/registrations", json={"url": "s3://other-bucket/x"}, headers=steward), 403
    )
    # deleting the reference never deletes someone else's object
    assert h.client.delete(f"{BASE}/x-helixgate/objects/{obj['id']}", headers=steward).status_code == 204
    assert s3_env.s3.get_object(Bucket=s3_env.bucket, Key="incoming/sample.cram")["Body"].read() == data


def test_register_external_needs_the_s3_backend(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(services=("drs", "core"))
    steward = h.auth("steward", "data-steward")
    msg = _error(h.client.post(f"{BASE}/x-helixgate/registrations", json={"url": "s3://b/k"}, headers=steward), 400)
    assert "s3" in msg


# ----------------------------------------------------------------------------- service-info
def test_service_info(env: Env) -> None:
    h = env.h
    steward = h.auth("steward", "data-steward")
    env.upload(h, steward, b"12345")
    env.upload(h, steward, b"678")
    r = h.client.get(f"{BASE}/service-info")
    assert r.status_code == 200
    info = r.json()
    validate("drs", "Service", info)
    validate("drs", "DrsService", info)
    assert info["type"] == {"group": "org.ga4gh", "artifact": "drs", "version": "1.5.0"}
    assert info["drs"] == {"maxBulkRequestLength": 100, "objectCount": 2, "totalObjectSize": 8}
    assert info["maxBulkRequestLength"] == 100


def test_signing_key_file_is_private(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(services=("drs", "core"))
    h.platform.domain(DrsStore)
    key = Path(h.platform.settings.data_dir) / "drs" / "url-signing.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert key.read_text() not in repr(h.platform.domain(DrsStore).signer)
