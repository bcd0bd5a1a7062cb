"""The verification gate as plain functions: what a task may run is derived from the
verified statement alone, and everything read from the database or over HTTP (pins,
checksums, paths, attachment bytes, local image ids, intermediate files) is compared with it
or with checksums the system computed itself.

Every function takes explicit inputs and raises ``IntegrityError`` (a security event for the
caller) naming what differed, expected vs actual. Nothing here talks to docker, HTTP or SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from helixgate.errors import BadRequest, IntegrityError, VerificationError
from helixgate.integrity import CHUNK
from helixgate.paths import check_relative_path, open_regular_nofollow
from helixgate.signing import TrustPolicy, VerifiedStatement, verify_tool_bundle


@dataclass(frozen=True)
class SignedTool:
    """Every fact about a tool version a task may rely on, taken from a verified statement."""

    tool_id: str
    version_id: str
    image_name: str  # the signed subject's name (registry/repository, or a local name)
    image_digest: str  # sha256:<hex> of the subject (manifest digest or image id)
    digest_kind: str
    config_digest: str  # sha256:<hex>: the only local image id that may run
    descriptor_checksums: Mapping[str, str]  # relative path -> sha256 hex
    signer: str
    predicate_type: str

    @property
    def pinned_ref(self) -> str:
        """What the worker pulls (by manifest digest) or creates (by image id)."""
        if self.digest_kind == "manifest":
            return f"{self.image_name}@{self.image_digest}"
        return self.image_digest


def _differs(what: str, expected: str, actual: str, subject: str) -> IntegrityError:
    return IntegrityError(
        f"{what} differs from the signed statement: expected {expected}, got {actual}",
        subject=subject,
        expected=expected,
        actual=actual,
    )


def signed_tool(bundle: str, *, policy: TrustPolicy, tool_id: str, version_id: str) -> SignedTool:
    """Verify ``bundle`` as the statement of exactly ``tool_id``:``version_id`` (its own
    signature: no other version's bundle can pass, the predicate names tool and version) and
    return the signed facts. An empty bundle is an unsigned version."""
    if not bundle:
        raise VerificationError(
            f"tool version {tool_id}:{version_id} has no signature of its own: refusing it",
            subject=f"{tool_id}:{version_id}",
            expected="a signature bundle",
            actual="none",
        )
    verified: VerifiedStatement = verify_tool_bundle(
        bundle, policy=policy, expected_digest=None, tool_id=tool_id, version_id=version_id
    )
    claim = verified.claim
    if not claim.config_digest:
        raise VerificationError(
            f"the statement of {tool_id}:{version_id} ({verified.predicate_type}) does not sign the image "
            "configuration digest; the registry re-signs legacy statements at start-up",
            subject=f"{tool_id}:{version_id}",
            expected="a v2 statement with imageConfigDigest",
            actual=verified.predicate_type,
        )
    return SignedTool(
        tool_id=claim.tool_id,
        version_id=claim.version_id,
        image_name=claim.image_name,
        image_digest=claim.image_digest,
        digest_kind=claim.digest_kind,
        config_digest=claim.config_digest,
        descriptor_checksums=dict(claim.descriptor_checksums),
        signer=str(verified.signer),
        predicate_type=verified.predicate_type,
    )


def check_pin(pin: Mapping[str, Any], signed: SignedTool) -> None:
    """Compare what TRS's tables answered for an image (``pin``) with the signed facts."""
    subject = f"{signed.tool_id}:{signed.version_id}"
    pairs = (
        ("tool id", signed.tool_id, str(pin.get("tool_id", ""))),
        ("version id", signed.version_id, str(pin.get("version_id", ""))),
        ("image digest recorded in TRS", signed.image_digest, str(pin.get("signed_digest", ""))),
        ("image digest kind recorded in TRS", signed.digest_kind, str(pin.get("digest_kind", ""))),
        ("image configuration digest recorded in TRS", signed.config_digest, str(pin.get("image_id", ""))),
        ("pinned image reference recorded in TRS", signed.pinned_ref, str(pin.get("pinned_ref", ""))),
    )
    for what, expected, actual in pairs:
        if not hmac.compare_digest(expected.encode(), actual.encode()):
            raise _differs(what, expected, actual[:200], subject)


def check_reference(reference: str, signed: SignedTool) -> None:
    """The task's ``dockerPull``/``dockerImageId`` must name the signed image: its digest, its
    image id, or its name with a tag (the tag itself is never used: the worker runs by digest)."""
    ref = reference.strip()
    if ref.startswith("sha256:"):
        ok = ref == signed.config_digest
    else:
        named, _, digest = ref.partition("@")
        last = named.rsplit("/", 1)[-1]
        name = named.rsplit(":", 1)[0] if ":" in last else named  # without its tag
        ok = name == signed.image_name and (not digest or digest == signed.image_digest)
    if not ok:
        raise IntegrityError(
            f"image {ref[:200]} is not the image signed for {signed.tool_id}:{signed.version_id} "
            f"(signed: {signed.pinned_ref})",
            subject=ref[:200],
            expected=signed.pinned_ref,
            actual=ref[:200],
        )


def check_local_image(local_id: str, signed: SignedTool) -> None:
    """The engine's image id (sha256 of the config, which pins the layers) is the signed one."""
    if not hmac.compare_digest(local_id.encode(), signed.config_digest.encode()):
        raise _differs("local image id", signed.config_digest, local_id[:200], signed.pinned_ref)


def check_descriptors(files: Mapping[str, bytes], signed: SignedTool, *, primary: str | None = None) -> None:
    """Each descriptor's path obeys the path rule and is in the statement; the sha256 of its
    bytes (hashed here) equals the signed checksum; the primary descriptor is one of them."""
    subject = f"{signed.tool_id}:{signed.version_id}"
    for path, content in files.items():
        try:
            check_relative_path(path, "descriptor path")
        except BadRequest as exc:
            raise IntegrityError(
                f"descriptor of {subject}: {exc.message}",
                subject=path[:200],
                expected="a relative path",
                actual=path[:200],
            ) from None
        expected = signed.descriptor_checksums.get(path)
        if expected is None:
            raise IntegrityError(
                f"descriptor {path[:200]!r} of {subject} is not in the signed statement "
                f"(signed files: {', '.join(sorted(signed.descriptor_checksums))[:300]})",
                subject=path[:200],
                expected="a signed descriptor path",
                actual=path[:200],
            )
        actual = hashlib.sha256(content).hexdigest()
        if not hmac.compare_digest(expected, actual):
            raise _differs(f"sha256 of descriptor {path[:200]}", expected, actual, subject)
    if primary is not None and primary not in files:
        raise IntegrityError(
            f"primary descriptor {primary[:200]!r} of {subject} is not among the verified files",
            subject=primary[:200],
        )


def hash_input_file(path: str, what: str, copy_to: str | None = None) -> str:
    """SHA-256 of the regular, single-link file at ``path`` (never through a symlink or a hard
    link), copying it to ``copy_to`` (created exclusively, never followed) while hashing."""
    fd = open_regular_nofollow(path, what)
    sha = hashlib.sha256()
    out = -1
    try:
        if copy_to is not None:
            out = os.open(copy_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            if out >= 0:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
    finally:
        os.close(fd)
        if out >= 0:
            os.close(out)
    return sha.hexdigest()


def check_input(what: str, expected: str, actual: str, source: str) -> None:
    """An input's staged bytes against the checksum of the exact record that feeds it."""
    if not hmac.compare_digest(expected, actual):
        raise IntegrityError(
            f"sha256 mismatch for {what} ({source}): expected {expected}, got {actual}",
            subject=what,
            expected=expected,
            actual=actual,
        )


def check_recorded_files(records: Iterable[tuple[str, str, str]]) -> None:
    """Every file the run recorded, as ``(path, sha256, source)``, is still the regular,
    single-link file with the recorded bytes.

    Used when the engine stopped short of asking for a task: the sandboxed engine cannot read
    through a link planted between tasks, so it fails before the gate sees the input. The
    worker then names the tampered file itself instead of reporting a bare engine failure.
    A file that is gone is left to the engine's own message (nothing was read from it).
    """
    for path, expected, source in records:
        try:
            os.lstat(path)
        except FileNotFoundError:
            continue
        what = f"recorded file {os.path.basename(path)[:200]} ({source[:200]})"
        check_input(what, expected, hash_input_file(path, what), source[:200])

