"""The in-toto statement HelixGate signs for every published tool version, and its checks.

Subject: the pinned image digest. Predicate (type ``PREDICATE_TYPE``, v2): tool id, version
id, digest kind, the image configuration digest (the local image id a worker must find),
every file's checksum and the publisher. v1 statements (no configuration digest) stay
verifiable; for a ``manifest`` subject they do not say which local image may run, so the
registry re-signs them as v2 at start-up (``TrsRegistry.upgrade_legacy_statements``).
Both signing backends sign the same statement; ``check_tool_statement`` is the one place
where a verified payload is accepted or refused, field by field, with expected vs actual.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from helixgate.errors import BadRequest, VerificationError
from helixgate.images import pinned_reference
from helixgate.integrity import normalize_sha256
from helixgate.paths import check_relative_path

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE_V1 = "https://helixgate.dev/attestations/tool-version/v1"
PREDICATE_TYPE = "https://helixgate.dev/attestations/tool-version/v2"
PREDICATE_TYPES = frozenset({PREDICATE_TYPE_V1, PREDICATE_TYPE})
DIGEST_KINDS = frozenset({"manifest", "image-id"})
MAX_STATEMENT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ToolVersionClaim:
    """What the registry asserts about a frozen tool version (the signed content).

    ``image_digest`` is ``sha256:<hex>``: the registry manifest digest when ``digest_kind`` is
    ``"manifest"``, the local engine's image id (config digest) when it is ``"image-id"``.
    ``descriptor_checksums`` maps each descriptor's relative path to its sha256 hex.
    ``config_digest`` is the image configuration digest (``sha256:<hex>``, the engine's image
    id); empty only for a claim read from a legacy v1 statement over a manifest digest.
    """

    tool_id: str
    version_id: str
    image_name: str
    image_digest: str
    digest_kind: str
    descriptor_checksums: Mapping[str, str] = field(default_factory=dict)
    publisher: str = ""
    config_digest: str = ""

    def __post_init__(self) -> None:
        for name in ("tool_id", "version_id", "image_name", "publisher"):
            value = getattr(self, name)
            if not isinstance(value, str) or (name != "publisher" and not value):
                raise BadRequest(f"tool version claim: {name} must be a non-empty string")
        if self.digest_kind not in DIGEST_KINDS:
            raise BadRequest(
                f"tool version claim: digest_kind must be one of {sorted(DIGEST_KINDS)}, got {self.digest_kind!r}"
            )
        object.__setattr__(self, "image_digest", "sha256:" + normalize_sha256(self.image_digest))
        if self.config_digest:
            object.__setattr__(self, "config_digest", "sha256:" + normalize_sha256(self.config_digest))
        elif self.digest_kind == "image-id":
            object.__setattr__(self, "config_digest", self.image_digest)
        checksums: dict[str, str] = {}
        for path, checksum in dict(self.descriptor_checksums).items():
            check_relative_path(path, "tool version claim: descriptor path")
            checksums[path] = normalize_sha256(checksum)
        object.__setattr__(self, "descriptor_checksums", dict(sorted(checksums.items())))

    @property
    def image_digest_hex(self) -> str:
        return self.image_digest[len("sha256:") :]

    @property
    def pinned_ref(self) -> str:
        """What the worker pulls or creates: ``name@sha256:<manifest>``, or the image id."""
        return pinned_reference(self.image_name if self.digest_kind == "manifest" else None, self.image_digest)

    def predicate(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "toolId": self.tool_id,
            "versionId": self.version_id,
            "digestKind": self.digest_kind,
            "descriptorChecksums": dict(self.descriptor_checksums),
            "publisher": self.publisher,
        }
        if self.config_digest:
            out["imageConfigDigest"] = self.config_digest
        return out

    def statement(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.image_name, "digest": {"sha256": self.image_digest_hex}}],
            "predicateType": PREDICATE_TYPE if self.config_digest else PREDICATE_TYPE_V1,
            "predicate": self.predicate(),
        }

    def statement_bytes(self) -> bytes:
        """Deterministic JSON encoding (sorted keys, no whitespace) of ``statement()``."""
        return canonical_json(self.statement())


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _fail(message: str, *, expected: str | None = None, actual: str | None = None) -> VerificationError:
    return VerificationError(message, subject="tool signature", expected=expected, actual=actual)


def _short(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_statement(payload_type: str, payload: bytes) -> dict[str, Any]:
    """Check the DSSE payload type and the in-toto envelope fields common to every statement."""
    if payload_type != PAYLOAD_TYPE:
        raise _fail(
            f"signed payload type is {_short(payload_type)!r}, expected {PAYLOAD_TYPE!r}",
            expected=PAYLOAD_TYPE,
            actual=_short(payload_type),
        )
    if len(payload) > MAX_STATEMENT_BYTES:
        raise _fail(f"signed statement is larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _fail("signed payload is not a JSON document") from None
    if not isinstance(statement, dict):
        raise _fail("signed payload is not a JSON object")
    type_ = statement.get("_type")
    if type_ != STATEMENT_TYPE:
        raise _fail(
            f"statement _type is {_short(type_)!r}, expected {STATEMENT_TYPE!r}",
            expected=STATEMENT_TYPE,
            actual=_short(type_),
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects or not all(isinstance(s, dict) for s in subjects):
        raise _fail("statement has no valid subject list")
    return statement


def subject_sha256(subject: Mapping[str, Any]) -> str | None:
    digest = subject.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        return None
    try:
        return normalize_sha256(digest["sha256"])
    except BadRequest:
        return None


def check_subject_digest(statement: Mapping[str, Any], expected_digest: str, *, only_one: bool) -> dict[str, Any]:
    """Return the subject whose sha256 equals ``expected_digest``; with ``only_one`` it must be the only subject."""
    expected = "sha256:" + normalize_sha256(expected_digest)
    subjects: list[dict[str, Any]] = statement["subject"]
    if only_one and len(subjects) != 1:
        raise _fail(
            f"statement must have exactly one subject, it has {len(subjects)}",
            expected="1 subject",
            actual=f"{len(subjects)} subjects",
        )
    actual: list[str] = []
    for subject in subjects:
        hex_ = subject_sha256(subject)
        actual.append(f"sha256:{hex_}" if hex_ else "<no sha256 digest>")
        if hex_ is not None and hmac.compare_digest(f"sha256:{hex_}".encode(), expected.encode()):
            return subject
    shown = actual[0] if len(actual) == 1 else ", ".join(actual[:5])
    raise _fail(
        f"signed image digest does not match: expected {expected}, got {shown}",
        expected=expected,
        actual=shown,
    )


def check_tool_statement(
    statement: Mapping[str, Any], *, expected_digest: str, tool_id: str, version_id: str
) -> ToolVersionClaim:
    """Check a parsed statement is HelixGate's claim for this tool version and image; return the claim."""
    predicate_type = statement.get("predicateType")
    if predicate_type not in PREDICATE_TYPES:
        raise _fail(
            f"statement predicateType is {_short(predicate_type)!r}, expected {PREDICATE_TYPE!r}",
            expected=PREDICATE_TYPE,
            actual=_short(predicate_type),
        )
    subject = check_subject_digest(statement, expected_digest, only_one=True)
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise _fail("statement has no predicate object")
    for key, expected in (("toolId", tool_id), ("versionId", version_id)):
        actual = predicate.get(key)
        if actual != expected:
            raise _fail(
                f"signed {key} does not match: expected {expected!r}, got {_short(actual)!r}",
                expected=expected,
                actual=_short(actual),
            )
    checksums = predicate.get("descriptorChecksums", {})
    if not isinstance(checksums, dict):
        raise _fail("predicate descriptorChecksums is not an object")
    config_digest = predicate.get("imageConfigDigest", "")
    if predicate_type == PREDICATE_TYPE and (not isinstance(config_digest, str) or not config_digest):
        raise _fail("v2 predicate carries no imageConfigDigest")
    if predicate_type == PREDICATE_TYPE_V1:
        config_digest = ""  # v1 never signed one: whatever the payload holds is not part of the claim
    try:
        return ToolVersionClaim(
            tool_id=tool_id,
            version_id=version_id,
            image_name=str(subject.get("name") or ""),
            image_digest=expected_digest,
            digest_kind=str(predicate.get("digestKind")),
            descriptor_checksums={str(k): str(v) for k, v in checksums.items()},
            publisher=str(predicate.get("publisher", "")),
            config_digest=str(config_digest),
        )
    except BadRequest as exc:
        raise _fail(f"signed predicate is malformed: {exc.message}") from None
