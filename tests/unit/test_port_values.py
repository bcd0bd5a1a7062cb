"""The values that cross the ports are read strictly from the GA4GH JSON, and the HTTP
implementations turn a peer's answer into the same error the in-process one raises."""

from __future__ import annotations

import json

import pytest

from helixgate.client import ClientError
from helixgate.errors import BadRequest, Conflict, Forbidden, IntegrityError, NotFound, Unauthorized
from helixgate.ports import DataObject, Provenance, TrustMaterial
from helixgate.ports_http import domain_error

SHA = "ab" * 32


def test_a_drs_object_is_read_with_its_sha256_and_refused_without_one() -> None:
    raw = {
        "id": "o1",
        "self_uri": "drs://h/o1",
        "name": "a.txt",
        "size": 3,
        "checksums": [{"type": "md5", "checksum": "00"}, {"type": "sha-256", "checksum": SHA.upper()}],
        "mime_type": "text/plain",
    }
    assert DataObject.from_drs_json(raw) == DataObject("o1", "drs://h/o1", "a.txt", 3, SHA, "text/plain")
    with pytest.raises(IntegrityError, match="DRS object o1 carries no sha-256 checksum"):
        DataObject.from_drs_json({**raw, "checksums": [{"type": "md5", "checksum": "00"}]})


def test_provenance_names_the_image_only_when_the_task_ran_one() -> None:
    assert json.loads(Provenance("r", "t", "wf.cwl").as_json()) == {
        "run_id": "r",
        "task_id": "t",
        "workflow": "wf.cwl",
        "input_checksums": {},
    }
    with_image = json.loads(Provenance("r", "t", "wf.cwl", {"/in": SHA}, "sha256:" + SHA, "img:1").as_json())
    assert (with_image["image_digest"], with_image["tool"], with_image["input_checksums"]) == (
        "sha256:" + SHA,
        "img:1",
        {"/in": SHA},
    )


def test_trust_material_round_trips_both_signer_kinds() -> None:
    key = {
        "kind": "key",
        "activeKeyId": "k2",
        "keys": [
            {"keyId": "k1", "publicKey": "PEM1", "revoked": "2026-01-01T00:00:00Z"},
            {"keyId": "k2", "publicKey": "PEM2", "revoked": None},
        ],
    }
    material = TrustMaterial.from_json(key)
    assert [(k.key_id, k.revoked) for k in material.keys] == [("k1", True), ("k2", False)]
    assert TrustMaterial.from_json(material.as_json()) == material
    sigstore = {"kind": "sigstore", "trustConfig": {"a": 1}, "identities": [{"identity": "me", "issuer": "iss"}]}
    assert TrustMaterial.from_json(sigstore).as_json() == sigstore


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict), (422, IntegrityError)],
)
def test_a_peers_answer_becomes_the_core_error_with_the_peers_message(status: int, kind: type) -> None:
    exc = domain_error(ClientError(f"HTTP {status}: object not found: o1", status=status))
    assert type(exc) is kind and exc.message == "object not found: o1" and exc.status == status


def test_a_server_error_stays_an_upstream_failure() -> None:
    original = ClientError("HTTP 503: busy", status=503)
    assert domain_error(original) is original
