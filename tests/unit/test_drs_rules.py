"""Fast checks of the data store's pure rules: read policy, signed URLs, bundle checksums,
Range parsing, metadata and provenance validation."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from drs_store.access import (
    ENV_SIGNING_KEY,
    ObjectHidden,
    Principal,
    ReadFacts,
    UrlSigner,
    may_delete,
    may_manage_dataset,
    may_read,
    may_see_dataset,
    principal_may_read,
    read_refusal,
)
from drs_store.domain import RangeNotSatisfiable, bundle_checksum, parse_meta, parse_provenance, parse_range
from helixgate.errors import BadRequest, ConfigurationError, Forbidden, NotFound, Unauthorized

NOW = 1_800_000_000


# ----------------------------------------------------------------------------- read policy
@pytest.mark.parametrize(
    ("user", "facts", "allowed"),
    [
        ("alice", ReadFacts(object_public=False, owner="bob"), False),
        (None, ReadFacts(object_public=False, owner="bob"), False),
        (None, ReadFacts(object_public=True, owner="bob"), True),
        (None, ReadFacts(object_public=False, owner="bob", dataset_public=True), True),
        ("bob", ReadFacts(object_public=False, owner="bob"), True),
        ("carol", ReadFacts(object_public=False, owner="bob", dataset_creator="carol"), True),
        ("alice", ReadFacts(object_public=False, owner="bob", dataset_creator="carol", has_grant=True), True),
        ("alice", ReadFacts(object_public=False, owner="bob", dataset_creator="carol", has_grant=False), False),
    ],
)
def test_read_policy(user: str | None, facts: ReadFacts, allowed: bool) -> None:
    assert may_read(user, facts) is allowed


def test_principal_delegation_and_permissions() -> None:
    direct = Principal("alice", ("analyst",), "alice")
    delegated = Principal("alice", ("analyst",), "helixgate-wes")
    assert not direct.delegated and delegated.delegated
    assert direct.has("drs:read") and not direct.has("drs:write")
    assert not Principal(None).has("drs:read")


def test_a_reader_without_drs_read_reads_nothing_but_anonymous_public_reads_work() -> None:
    public = ReadFacts(object_public=True, owner="bob")
    assert principal_may_read(Principal(None), public)
    assert principal_may_read(Principal("alice", ("viewer",)), public)
    assert not principal_may_read(Principal("alice", ()), public)  # signed in without drs:read
    owned = ReadFacts(object_public=False, owner="alice")
    assert principal_may_read(Principal("alice", ("analyst",)), owned)
    assert not principal_may_read(Principal(None), owned)


def test_who_may_delete_and_manage() -> None:
    admin, steward, other = Principal("root", ("admin",)), Principal("sam", ("data-steward",)), Principal("eve")
    assert may_delete(steward, owner="sam", dataset_creator=None)
    assert may_delete(steward, owner="bob", dataset_creator="sam")
    assert may_delete(admin, owner="bob", dataset_creator=None)
    assert not may_delete(other, owner="bob", dataset_creator="sam")
    assert not may_delete(Principal(None), owner="bob", dataset_creator=None)
    assert may_manage_dataset(steward, "sam") and may_manage_dataset(admin, "sam")
    assert not may_manage_dataset(other, "sam")


def test_who_may_see_a_dataset() -> None:
    alice = Principal("alice", ("analyst",))
    assert may_see_dataset(Principal(None), public=True, creator="sam", has_grant=False)
    assert not may_see_dataset(Principal(None), public=False, creator="sam", has_grant=False)
    assert may_see_dataset(alice, public=False, creator="alice", has_grant=False)
    assert may_see_dataset(alice, public=False, creator="sam", has_grant=True)
    assert not may_see_dataset(alice, public=False, creator="sam", has_grant=False)


def test_a_refused_read_answers_by_who_asked_and_the_hiding_setting() -> None:
    oid = "a" * 32
    assert isinstance(read_refusal(oid, Principal("alice"), hide_existence=True), ObjectHidden)
    assert isinstance(read_refusal(oid, Principal(None), hide_existence=False), Unauthorized)
    delegated = read_refusal(oid, Principal("alice", (), "helixgate-wes"), hide_existence=False)
    assert isinstance(delegated, Forbidden) and "delegated by helixgate-wes" in delegated.message
    assert "ask a data steward" in read_refusal(oid, Principal("alice", (), "alice"), hide_existence=False).message


# ----------------------------------------------------------------------------- signed URLs
def _signer() -> UrlSigner:
    return UrlSigner(bytes(range(32)))


def test_signed_url_round_trip() -> None:
    s = _signer()
    params = s.sign("a" * 32, "alice", 300, now=NOW)
    assert params["u"] == "alice" and params["exp"] == str(NOW + 300)
    claims = s.verify("a" * 32, "alice", params["exp"], params["sig"], now=NOW + 299)
    assert claims.user == "alice" and claims.expires == NOW + 300


def test_signed_url_expiry() -> None:
    s = _signer()
    params = s.sign("a" * 32, "alice", 300, now=NOW)
    with pytest.raises(Forbidden, match="expired"):
        s.verify("a" * 32, "alice", params["exp"], params["sig"], now=NOW + 300)


@pytest.mark.parametrize("field", ["object", "user", "exp", "sig", "anonymous", "key"])
def test_signed_url_tampering_is_forbidden(field: str) -> None:
    s = _signer()
    params = s.sign("a" * 32, "alice", 300, now=NOW)
    object_id, user, exp, sig = "a" * 32, "alice", params["exp"], params["sig"]
    verifier = s
    if field == "object":
        object_id = "b" * 32
    elif field == "user":
        user = "mallory"
    elif field == "exp":
        exp = str(NOW + 10_000)
    elif field == "sig":
        sig = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    elif field == "anonymous":
        user = None  # type: ignore[assignment]
    else:
        verifier = UrlSigner(bytes(32))
    with pytest.raises(Forbidden):
        verifier.verify(object_id, user, exp, sig, now=NOW)


@pytest.mark.parametrize(("exp", "sig"), [("soon", "x" * 43), (str(NOW + 5), "short"), (str(NOW + 5), "")])
def test_malformed_signed_urls(exp: str, sig: str) -> None:
    with pytest.raises(Forbidden):
        _signer().verify("a" * 32, None, exp, sig, now=NOW)


def test_signing_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    a = UrlSigner.from_data_dir(tmp_path, env={})
    key = tmp_path / "drs" / "url-signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    b = UrlSigner.from_data_dir(tmp_path, env={})
    params = a.sign("c" * 32, None, 60, now=NOW)
    b.verify("c" * 32, None, params["exp"], params["sig"], now=NOW)
    assert key.read_text() not in repr(a)
    key.chmod(0o644)
    with pytest.raises(ConfigurationError, match="0600"):
        UrlSigner.from_data_dir(tmp_path, env={})


def test_signing_key_from_environment(tmp_path: Path) -> None:
    secret = bytes(range(1, 33))
    env = {ENV_SIGNING_KEY: base64.b64encode(secret).decode()}
    a = UrlSigner.from_data_dir(tmp_path / "one", env=env)
    b = UrlSigner.from_data_dir(tmp_path / "two", env=env)  # two replicas, no shared data dir
    params = a.sign("d" * 32, "u", 60, now=NOW)
    b.verify("d" * 32, "u", params["exp"], params["sig"], now=NOW)
    assert not (tmp_path / "one" / "drs" / "url-signing.key").exists()
    with pytest.raises(ConfigurationError) as exc:
        UrlSigner.from_data_dir(tmp_path, env={ENV_SIGNING_KEY: base64.b64encode(b"short").decode()})
    assert "c2hvcnQ" not in exc.value.message


# ----------------------------------------------------------------------------- bundle checksum
def test_bundle_checksum_follows_the_drs_rule() -> None:
    blob1 = hashlib.sha256(b"blob1").hexdigest()
    blob2 = hashlib.sha256(b"blob2").hexdigest()
    first, second = sorted([blob1, blob2])
    assert bundle_checksum([blob1, blob2]) == hashlib.sha256((first + second).encode()).hexdigest()
    assert bundle_checksum([blob2, blob1]) == bundle_checksum([blob1, blob2])  # order of contents is irrelevant
    assert bundle_checksum([blob1, blob1]) == hashlib.sha256((blob1 * 2).encode()).hexdigest()


# ----------------------------------------------------------------------------- ranges
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=90-500", (90, 100)),
        ("bytes=0-1,4-5", None),  # several ranges: serve the whole object
        ("items=0-1", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, 100)
    assert exc.value.status == 416 and exc.value.size == 100


@pytest.mark.parametrize("header", ["bytes=abc-", "bytes=5-2", "bytes=5"])
def test_malformed_ranges(header: str) -> None:
    with pytest.raises(BadRequest):
        parse_range(header, 100)


# ----------------------------------------------------------------------------- metadata and provenance
def test_parse_meta_validates_fields() -> None:
    meta = parse_meta(name="reads.bam", mime_type="application/octet-stream", sha256="SHA256:" + "A" * 64)
    assert meta.sha256 == "a" * 64 and meta.public is False
    for bad in ({"name": "../etc/passwd"}, {"name": "a b"}, {"mime_type": "nonsense"}, {"sha256": "12"}):
        with pytest.raises(BadRequest):
            parse_meta(**bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        parse_meta(dataset_id="../x")


def test_parse_provenance() -> None:
    prov = parse_provenance(
        '{"run_id": "r1", "task_id": "t1", "image_digest": "sha256:' + "0" * 64 + '",'
        ' "input_checksums": {"reads": "sha256:' + "F" * 64 + '"}}'
    )
    assert prov == {
        "run_id": "r1",
        "task_id": "t1",
        "image_digest": "sha256:" + "0" * 64,
        "input_checksums": {"reads": "f" * 64},
    }
    assert parse_provenance(None) is None and parse_provenance("") is None
    for bad in (
        "{",
        "[]",
        '{"task_id": "t"}',
        '{"run_id": "r", "task_id": "t", "image_digest": "latest"}',
        '{"run_id": "r", "task_id": "t", "input_checksums": {"x": "nope"}}',
        '{"run_id": "r", "task_id": "t", "extra": 1}',
        '{"run_id": "r", "task_id": "' + "x" * 20000 + '"}',
    ):
        with pytest.raises(BadRequest):
            parse_provenance(bad)
