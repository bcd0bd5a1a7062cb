"""The dashboard's tool, data and audit pages, the logic alone: view models from API answers,
form checks, the UI's own re-verification of a tool version (helixgate_ui/pages/*_view.py)."""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from typing import Any, Callable

import pytest

from helixgate.errors import BadRequest, IntegrityError
from helixgate.sdk import check_recorded_checksums
from helixgate.signing import KeySigner, ToolVersionClaim
from helixgate_ui.pages import audit_view, data_view, tools_view

STEWARD = {"username": "steward", "roles": ["data-steward"], "permissions": ["drs:read", "drs:write", "drs:grant"]}
VIEWER = {"username": "vic", "roles": ["viewer"], "permissions": ["drs:read", "trs:read", "wes:read"]}
ADMIN = {"username": "root", "roles": ["admin"], "permissions": ["drs:read", "drs:admin"]}
DEV = {"username": "dev", "roles": ["tool-developer"], "permissions": ["trs:read", "trs:publish"]}

DIGEST = "sha256:" + "ab" * 32
CWL = "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [tr, a-z, A-Z]\n"


# ----------------------------------------------------------------------------- tools
def _signed_record(tmp_path: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    signer = KeySigner(tmp_path / "keys", passphrase=b"p" * 16)
    checksum = hashlib.sha256(CWL.encode()).hexdigest()
    claim = ToolVersionClaim(
        tool_id="org.upper",
        version_id="1.0.0",
        image_name="127.0.0.1:5000/upper",
        image_digest=DIGEST,
        digest_kind="manifest",
        descriptor_checksums={"upper.cwl": checksum},
        publisher="dev",
        config_digest="sha256:" + "cd" * 32,
    )
    bundle = signer.sign(claim)
    record = {
        "tool_id": "org.upper",
        "version_id": "1.0.0",
        "publisher": "dev",
        "descriptor_type": ["CWL"],
        "files": [
            {
                "path": "upper.cwl",
                "file_type": "PRIMARY_DESCRIPTOR",
                "size": len(CWL),
                "checksum": {"checksum": checksum, "type": "sha256"},
                "content": CWL,
            }
        ],
        "images": [
            {
                "primary": True,
                "reference": "127.0.0.1:5000/upper:1.0",
                "image_name": f"127.0.0.1:5000/upper@{DIGEST}",
                "manifest_digest": DIGEST,
                "config_digest": "sha256:" + "cd" * 32,
                "source": "registry",
            }
        ],
        "signature": {
            "signed": True,
            "signer_kind": "key",
            "signer": signer.active_key_id,
            "subject_name": "127.0.0.1:5000/upper",
            "subject_digest": DIGEST,
            "digest_kind": "manifest",
        },
    }
    return record, bundle, signer.trust_material()


def test_version_is_re_verified_here_and_tampering_is_shown_with_its_reason(tmp_path: Path) -> None:
    record, bundle, trust = _signed_record(tmp_path)
    ok = tools_view.verify_here(record, lambda: bundle, lambda: trust)
    assert ok.ok and ok.subject_digest == DIGEST and "1 file checksum" in ok.message

    tampered = copy.deepcopy(record)
    tampered["files"][0]["content"] = CWL.replace("tr", "rm")
    bad = tools_view.verify_here(tampered, lambda: bundle, lambda: trust)
    assert bad.status == "failed" and not bad.ok
    assert "upper.cwl (recorded checksum)" in bad.message
    assert bad.expected == record["files"][0]["checksum"]["checksum"]
    assert bad.actual == hashlib.sha256(tampered["files"][0]["content"].encode()).hexdigest()

    moved = copy.deepcopy(record)
    moved["images"][0]["manifest_digest"] = "sha256:" + "ee" * 32  # the pin no longer is the signed subject
    assert "pinned primary image digest" in tools_view.verify_here(moved, lambda: bundle, lambda: trust).message

    unsigned = copy.deepcopy(record)
    unsigned["signature"] = {"signed": False}
    assert tools_view.verify_here(unsigned, lambda: bundle, lambda: trust).status == "unsigned"

    page = tools_view.version_page(record, ok)
    assert page.signer.startswith("registry key ") and page.images[0].pinned.endswith(DIGEST)
    assert page.files[0].sha256 == record["files"][0]["checksum"]["checksum"]


def test_tool_pages_offer_publishing_only_to_the_owner_with_the_permission() -> None:
    record = {
        "id": "org.upper",
        "name": "upper",
        "organization": "org",
        "x_helixgate": {"owner": "dev"},
        "versions": [{"id": "1.0.0", "signed": True, "descriptor_type": ["CWL"], "images": [{"image_name": "x@y"}]}],
    }
    assert tools_view.tool_page(record, DEV).can_publish
    assert not tools_view.tool_page(record, {**DEV, "username": "other"}).can_publish
    assert not tools_view.tool_page(record, {**VIEWER, "username": "dev"}).can_publish
    page = tools_view.tool_page(record, VIEWER)
    assert page.versions[0].signed and page.versions[0].images == ("x@y",)
    rows = tools_view.tool_rows([record, {"id": "empty", "versions": []}])
    assert (rows[0].versions, rows[0].signed_versions, rows[0].latest) == (1, 1, "1.0.0")
    assert (rows[1].versions, rows[1].latest) == (0, "")


def test_publish_form_applies_the_clis_checks() -> None:
    req = tools_view.parse_publish(
        " 1.0.0 ", "CWL", "127.0.0.1:5000/upper:1.0\n\n  helper:2 \n", ("upper.cwl", CWL.encode()), [("lib.yml", b"x")]
    )
    assert req.images == ("127.0.0.1:5000/upper:1.0", "helper:2") and req.primary == "upper.cwl"
    assert list(req.files) == ["upper.cwl", "lib.yml"]
    cases = [
        (("", "CWL", "img", ("a.cwl", b"x"), []), "version"),
        (("1.0.0", "XYZ", "img", ("a.cwl", b"x"), []), "descriptor type"),
        (("1.0.0", "CWL", " \n", ("a.cwl", b"x"), []), "at least one image"),
        (("1.0.0", "CWL", "img", None, []), "primary descriptor"),
        (("1.0.0", "CWL", "img", ("a.cwl", b"\xff\xfe"), []), "not UTF-8"),
        (("1.0.0", "CWL", "img", ("a.cwl", b"x"), [("a.cwl", b"y")]), "given twice"),
        (("1.0.0", "CWL", "img", ("bad name.cwl", b"x"), []), "file name"),
        (("1.0.0", "CWL", "img", ("a.cwl", b"x" * (tools_view.TEXT_LIMIT + 1)), []), "too large"),
    ]
    for args, message in cases:
        with pytest.raises(BadRequest, match=message):
            tools_view.parse_publish(*args)  # type: ignore[arg-type]


def test_recorded_checksums_must_be_those_of_the_bytes_sent() -> None:
    sent = {"upper.cwl": CWL}
    good = {"files": [{"path": "upper.cwl", "checksum": {"checksum": hashlib.sha256(CWL.encode()).hexdigest()}}]}
    check_recorded_checksums(sent, good)
    other = {"files": [{"path": "upper.cwl", "checksum": {"checksum": "0" * 64}}]}
    with pytest.raises(IntegrityError, match="as recorded by the registry") as info:
        check_recorded_checksums(sent, other)
    assert info.value.expected == hashlib.sha256(CWL.encode()).hexdigest() and info.value.actual == "0" * 64
    with pytest.raises(IntegrityError, match="not recorded"):
        check_recorded_checksums(sent, {"files": []})


def test_image_drift_report() -> None:
    statuses = tools_view.image_statuses(
        {"images": [{"reference": "r", "pinned_digest": "a", "current_digest": "b", "status": "drifted"}]}
    )
    assert statuses[0].status == "drifted" and not statuses[0].ok


# ----------------------------------------------------------------------------- data
def test_dataset_actions_follow_the_data_stores_rules() -> None:
    mine = {"id": "d1", "name": "cohort", "created_by": "steward", "object_count": 2, "public": False}
    theirs = {**mine, "created_by": "someone"}
    row = data_view.dataset_row(mine, STEWARD)
    assert row.may_grant and row.may_upload and row.object_count == 2
    assert not data_view.dataset_row(theirs, STEWARD).may_grant  # only the creator (or an admin) manages
    assert not data_view.dataset_row(mine, {**VIEWER, "username": "steward"}).may_grant  # no drs:grant
    admin = data_view.dataset_row(theirs, ADMIN)
    assert not admin.may_grant  # drs:admin alone lacks drs:grant: the API would refuse
    assert data_view.dataset_row(theirs, {**ADMIN, "permissions": [*ADMIN["permissions"], "drs:grant"]}).may_grant


def test_object_rows_carry_checksum_and_provenance() -> None:
    obj = {
        "id": "a" * 32,
        "self_uri": "drs://h/" + "a" * 32,
        "name": "out.txt",
        "size": 2048,
        "checksums": [{"type": "md5", "checksum": "x"}, {"type": "sha-256", "checksum": "f" * 64}],
        "provenance": {
            "run_id": "r1",
            "task_id": "t1",
            "image_digest": DIGEST,
            "input_checksums": {"b": "2", "a": "1"},
        },
        "x-helixgate-quarantined": True,
    }
    row = data_view.object_row(obj)
    assert row.sha256 == "f" * 64 and row.size_text == "2.0 KiB" and row.quarantined and not row.bundle
    assert row.provenance is not None and row.provenance.input_checksums == (("a", "1"), ("b", "2"))
    assert data_view.object_row({"id": "b", "contents": []}).provenance is None


def test_data_forms() -> None:
    assert data_view.object_name("", "C:\\data\\my file (1).vcf") == "my_file__1_.vcf"
    assert data_view.object_name(" given.txt ", "x") == "given.txt"
    with pytest.raises(BadRequest, match="object name"):
        data_view.object_name("a/b", "x")
    assert data_view.expected_sha256("SHA256:".lower() + "AB" * 32) == "ab" * 32
    assert data_view.expected_sha256(" ") is None
    with pytest.raises(BadRequest, match="64 hexadecimal"):
        data_view.expected_sha256("abc")
    assert data_view.parse_username(" alice ") == "alice"
    with pytest.raises(BadRequest):
        data_view.parse_username("alice; drop")
    with pytest.raises(BadRequest, match="dataset name"):
        data_view.parse_dataset_form(" ", "", False)
    grants = data_view.grant_rows([{"username": "a"}, {"username": "b", "revoked_time": "2026-01-01T00:00:00Z"}])
    assert [g.active for g in grants] == [True, False]


# ----------------------------------------------------------------------------- audit
def test_audit_filters_are_checked_and_passed_on() -> None:
    f = audit_view.parse_filters({"category": "security", "actor": " alice ", "since": "2026-01-02", "page_size": "25"})
    assert f.api_params() == {
        "category": "security",
        "actor": "alice",
        "since": "2026-01-02T00:00:00Z",
        "page_size": "25",
    }
    assert f.query(page_token="t")["page_token"] == "t"
    assert audit_view.parse_filters({"until": "2026-01-02T10:00+02:00"}).until == "2026-01-02T08:00:00Z"
    for args, message in [
        ({"category": "nope"}, "category"),
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"page_size": "7"}, "page size"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "later"),
        ({"actor": "x" * 300}, "actor"),
    ]:
        with pytest.raises(BadRequest, match=message):
            audit_view.parse_filters(args)


def test_security_events_and_refusals_are_highlighted() -> None:
    base = {"seq": 1, "time": "t", "category": "request", "action": "a", "outcome": "success", "severity": 3}
    rows = audit_view.event_rows(
        [base, {**base, "category": "security"}, {**base, "outcome": "denied"}, {**base, "severity": 8}]
    )
    assert [r.highlighted for r in rows] == [False, True, True, True]
    assert rows[1].security and not rows[2].security
    assert audit_view.chain_status({"ok": True, "problems": []}).ok
    broken = audit_view.chain_status({"ok": False, "problems": ["record 7: hash mismatch"]})
    assert not broken.ok and broken.problems == ("record 7: hash mismatch",)


class _FakeDrs:
    """Records what reached the "data store"; ``stored`` decides what it says it stored."""

    def __init__(self, stored: Callable[[bytes], bytes]) -> None:
        self.stored, self.received, self.deleted = stored, b"", []  # type: ignore[var-annotated]
        self.api = self

    def upload(self, data: Any, *, name: str, dataset_id: str | None = None, sha256: str | None = None) -> Any:
        self.received = b"".join(data)
        digest = hashlib.sha256(self.stored(self.received)).hexdigest()
        return {"id": "a" * 32, "name": name, "checksums": [{"type": "sha-256", "checksum": digest}]}

    def request(self, method: str, path: str, **kwargs: Any) -> None:
        self.deleted.append((method, path))


def test_upload_relay_proves_the_stored_bytes_are_those_relayed() -> None:
    data = b"ACGT" * 300_000  # several blocks
    good = _FakeDrs(lambda b: b)
    obj = data_view.relay_upload(good, io.BytesIO(data), name="x", dataset_id=None, expected=None, length=len(data))
    assert good.received == data and obj["id"] == "a" * 32 and good.deleted == []

    # the store says it holds other bytes: refused, named, and the object deleted
    flipped = _FakeDrs(lambda b: b[:-1] + b"A")  # one byte differs
    with pytest.raises(IntegrityError, match="stored vs relayed") as info:
        data_view.relay_upload(flipped, io.BytesIO(data), name="x", dataset_id=None, expected=None, length=None)
    assert info.value.expected == hashlib.sha256(data).hexdigest()
    assert flipped.deleted == [("DELETE", "/ga4gh/drs/v1/x-helixgate/objects/" + "a" * 32)]

    # fewer bytes arrived than the browser announced: refused, deleted
    short = _FakeDrs(lambda b: b)
    with pytest.raises(IntegrityError, match="cut short: 10 of 11 bytes"):
        data_view.relay_upload(short, io.BytesIO(b"0123456789"), name="x", dataset_id=None, expected=None, length=11)
    assert len(short.deleted) == 1


def test_trust_material_view() -> None:
    trust = tools_view.trust_view(
        {
            "kind": "key",
            "activeKeyId": "b" * 64,
            "keys": [{"keyId": "a" * 64, "revoked": "2026-01-01T00:00:00Z"}, {"keyId": "b" * 64, "revoked": None}],
        }
    )
    assert [(k.active, bool(k.revoked)) for k in trust.keys] == [(False, True), (True, False)]
    sig = tools_view.trust_view({"kind": "sigstore", "identities": [{"identity": "me@x", "issuer": "https://i"}]})
    assert sig.identities == (("me@x", "https://i"),) and sig.keys == ()


def test_download_stream_holds_back_its_end_until_the_bytes_match() -> None:
    chunks = [b"abc", b"def", b"gh"]
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()

    def run(parts: list[bytes], expected: str = digest, size: int = len(data)) -> tuple[bytes, Exception | None]:
        got = b""
        try:
            for piece in data_view.verified_stream(parts, expected_sha256=expected, size=size, what="drs://h/o"):
                got += piece
        except IntegrityError as exc:
            return got, exc
        return got, None

    assert run(chunks) == (data, None)
    got, exc = run([b"abc", b"dEf", b"gh"])  # one flipped byte
    assert isinstance(exc, IntegrityError) and "sha256 mismatch" in exc.message
    assert got == b"abcdEf"  # the last piece never left: the download is incomplete
    got, exc = run([b"abc", b"def"])  # cut short
    assert isinstance(exc, IntegrityError) and "6 of 8 bytes" in exc.message and got == b"abc"
    got, exc = run([*chunks, b"x"])  # longer than recorded
    assert isinstance(exc, IntegrityError) and "more than the recorded 8 bytes" in exc.message
    assert len(got) < len(data) + 1
    row = data_view.object_row({"id": "i" * 32, "name": "a b/../c.txt"})
    assert data_view.download_name(row) == "a_b_.._c.txt"


def test_fragment_errors_are_escaped() -> None:
    from helixgate_ui.pages.catalog_common import fragment_error

    html = fragment_error('registry said <script>alert("x")</script>')
    assert "<script>" not in html and "&lt;script&gt;" in html and 'role="alert"' in html
