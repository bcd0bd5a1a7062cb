"""WES talks to DRS and TRS over their HTTP APIs only, as the service identity, acting
on behalf of the run's owner where data access is concerned."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from helixgate.client import ApiClient, ClientError, json_object
from helixgate.errors import IntegrityError, UpstreamError
from helixgate.integrity import check_sha256, normalize_sha256
from helixgate.platform import Platform
from helixgate.uris import require_clean, scheme_of
from helixgate.web import ON_BEHALF_HEADER

_TRS_URL = re.compile(r"/ga4gh/trs/v2/tools/([^/]+)/versions/([^/]+)")


def parse_trs_reference(url: str, settings: Any) -> tuple[str, str] | None:
    """``trs://host/<tool>/<version>`` or a TRS version URL -> (tool id, version id)."""
    scheme = scheme_of(url)
    if scheme == "trs":
        parts = require_clean(url, "workflow_url")[len("trs://") :].split("/")
        if len(parts) != 3 or not all(parts):
            from helixgate.errors import BadRequest

            raise BadRequest("TRS workflow_url must be trs://<host>/<tool id>/<version id>")
        return parts[1], parts[2]
    if scheme in ("http", "https"):
        trs_host = urlsplit(settings.effective_trs_url).netloc.lower()
        parsed = urlsplit(require_clean(url, "workflow_url"))
        m = _TRS_URL.search(parsed.path)
        if m and parsed.netloc.lower() == trs_host:
            return m.group(1), m.group(2)
    return None


def sha256_of(checksums: Any, subject: str) -> str:
    """The sha-256 value from a GA4GH checksum list (DRS) or single checksum object (TRS)."""
    for c in [checksums] if isinstance(checksums, dict) else checksums or []:
        if str(c.get("type", "")).lower() in ("sha-256", "sha256"):
            return normalize_sha256(c["checksum"])
    raise IntegrityError(f"{subject} carries no sha-256 checksum", subject=subject)


def service_client(platform: Platform, base_url: str) -> ApiClient:
    """A client for a peer service, authenticated as the service identity, verifying TLS."""
    return ApiClient(base_url, lambda: platform.service_token(), verify=platform.settings.tls_ca_bundle or True)


class DrsPeer:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.client = service_client(platform, platform.settings.effective_drs_url + "/ga4gh/drs/v1")

    def _as(self, user: str) -> dict[str, str]:
        return {ON_BEHALF_HEADER: user}

    def get_object(self, user: str, object_id: str) -> dict[str, Any]:
        return self.client.get_object(f"/objects/{quote(object_id, safe='')}", headers=self._as(user))

    def unreadable(self, user: str, object_ids: list[str]) -> list[str]:
        """The ids ``user`` may not read (checked on their behalf, audited with both identities)."""
        if "drs" in self.platform.served:
            return self._unreadable_here(user, object_ids)
        refused = []
        for object_id in object_ids:
            try:
                self.get_object(user, object_id)
            except ClientError as exc:
                if exc.status in (401, 403, 404):
                    refused.append(object_id)
                else:
                    raise
        return refused

    def _unreadable_here(self, user: str, object_ids: list[str]) -> list[str]:
        """Same check against the DRS domain of this process: the same read policy, no HTTP
        self-call (which could exhaust the request threads under concurrent submissions)."""
        from drs_store.access import Principal
        from drs_store.domain import DrsStore
        from helixgate.errors import HelixGateError

        account = self.platform.users.get(user)
        who = Principal(user, account.roles if account else (), self.platform.settings.service_user)
        drs = self.platform.domain(DrsStore)
        refused = []
        for object_id in object_ids:
            try:
                drs.get_object(who, object_id)
                outcome = "success"
            except HelixGateError:
                refused.append(object_id)
                outcome = "denied"
            self.platform.audit.record(
                category="request",
                action="drs.GetObject",
                outcome=outcome,
                actor=self.platform.settings.service_user,
                on_behalf_of=user,
                service="drs",
                target=object_id,
                details={"in_process": True, "purpose": "wes submission check"},
            )
        return refused

    def download(self, user: str, object_id: str, dest: Path) -> tuple[str, int, dict[str, Any]]:
        """Stream an object to ``dest`` while hashing; refuse it unless the hash equals DRS's checksum."""
        obj = self.get_object(user, object_id)
        expected = sha256_of(obj.get("checksums"), f"DRS object {object_id}")
        access = next((m for m in obj.get("access_methods") or [] if m.get("type") == "https"), None)
        if access is None:
            raise IntegrityError(f"DRS object {object_id} has no https access method", subject=object_id)
        if access.get("access_url"):
            url = access["access_url"]["url"]
        else:
            url = self.client.get_json(
                f"/objects/{quote(object_id, safe='')}/access/{access['access_id']}", headers=self._as(user)
            )["url"]
        sha = hashlib.sha256()
        size = 0
        tmp = dest.with_name(dest.name + ".part")
        subject = f"input drs://{self.platform.settings.drs_host}/{object_id}"
        try:
            with open(tmp, "xb") as out:  # O_EXCL: never through a link planted at the name
                for chunk in self.client.stream(url, headers=self._as(user)):
                    sha.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if exc.status in (409, 422):  # DRS refused: integrity failure / quarantined object
                raise IntegrityError(f"{subject} refused by DRS: {exc.message}", subject=subject) from None
            raise
        except UpstreamError:
            tmp.unlink(missing_ok=True)  # the stream was cut: DRS aborts it on a digest mismatch
            raise IntegrityError(
                f"{subject}: download aborted before the end (integrity check failed?)", subject=subject
            ) from None
        try:
            check_sha256(subject, expected, sha.hexdigest())
        except IntegrityError:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        return expected, size, obj

    def upload(
        self,
        user: str,
        stream: BinaryIO,
        *,
        name: str,
        sha256: str,
        provenance: dict[str, Any],
        mime_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        import json

        params = {"name": name, "sha256": sha256, "mime_type": mime_type, "provenance": json.dumps(provenance)}
        resp = self.client.request(
            "POST",
            "/x-helixgate/objects",
            params=params,
            data=stream,
            headers={**self._as(user), "Content-Type": "application/octet-stream"},
        )
        return json_object(resp)


@dataclass(frozen=True)
class DescriptorFile:
    path: str
    content: bytes
    sha256: str
    primary: bool


class TrsPeer:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.client = service_client(platform, platform.settings.effective_trs_url + "/ga4gh/trs/v2")
        self._trust: Any = None
        self._trust_at = 0.0
        self._bundles: dict[tuple[str, str], tuple[float, str]] = {}
        self._trust_lock = threading.Lock()

    def fetch_descriptors(self, tool_id: str, version_id: str) -> list[DescriptorFile]:
        """Every CWL descriptor file of a version, each checked against the checksum TRS recorded."""
        if "trs" in self.platform.served:
            return self._descriptors_here(tool_id, version_id)
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        listing = self.client.get_json(f"/tools/{t}/versions/{v}/CWL/files")
        out = []
        for entry in listing:
            if entry.get("file_type") not in ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR"):
                continue
            path = entry["path"]
            recorded = sha256_of(entry.get("checksum"), f"TRS file {path}")
            wrapper = self.client.get_json(f"/tools/{t}/versions/{v}/CWL/descriptor/{quote(path)}")
            content = (wrapper.get("content") or "").encode()
            actual = hashlib.sha256(content).hexdigest()
            check_sha256(f"descriptor {path} of {tool_id}:{version_id}", recorded, actual)
            out.append(DescriptorFile(path, content, actual, entry["file_type"] == "PRIMARY_DESCRIPTOR"))
        if not any(f.primary for f in out):
            raise IntegrityError(f"TRS version {tool_id}:{version_id} has no primary CWL descriptor", subject=tool_id)
        return out

    def _descriptors_here(self, tool_id: str, version_id: str) -> list[DescriptorFile]:
        """The TRS domain of this process: same files, same checksum re-verification, no HTTP self-call."""
        from trs_registry.domain import TrsRegistry

        files = self.platform.domain(TrsRegistry).version_files(tool_id, version_id, "CWL", with_content=True)
        out = []
        for f in files:
            if f.info.file_type not in ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR"):
                continue
            actual = hashlib.sha256(f.content).hexdigest()
            check_sha256(f"descriptor {f.info.path} of {tool_id}:{version_id}", f.info.sha256, actual)
            out.append(DescriptorFile(f.info.path, f.content, actual, f.info.file_type == "PRIMARY_DESCRIPTOR"))
        if not any(f.primary for f in out):
            raise IntegrityError(f"TRS version {tool_id}:{version_id} has no primary CWL descriptor", subject=tool_id)
        return out

    def image_pins(self, reference: str) -> list[dict[str, Any]]:
        """What TRS's tables say about the signed versions covering ``reference`` (untrusted:
        the gate compares each field it uses with the version's verified statement)."""
        pins = self.client.get_json("/x-helixgate/images", params={"reference": reference}).get("pins") or []
        return [_pin(p) for p in pins]

    def image_pin(self, reference: str, prefer: tuple[str, str] | None = None) -> dict[str, Any]:
        """The signed TRS version covering ``reference``; refuses unsigned or ambiguous images.

        With ``prefer`` (the run came from that TRS version) only that version's own pin is
        accepted: a task never runs under another version's signature. Otherwise a tag
        published in several versions with different digests is ambiguous unless the
        reference carries the digest.
        """
        from helixgate.errors import VerificationError

        pins = self.image_pins(reference)
        if prefer is not None:
            for p in pins:
                if (p["tool_id"], p["version_id"]) == prefer:
                    return p
            raise VerificationError(
                f"image {reference} is not the signed image of tool version {prefer[0]}:{prefer[1]} "
                "that this run executes: refusing (no other version's signature counts)",
                subject=reference,
                expected=f"{prefer[0]}:{prefer[1]}",
                actual=", ".join(f"{p['tool_id']}:{p['version_id']}" for p in pins[:5]) or "no signed version",
            )
        if not pins:
            raise VerificationError(
                f"image {reference} is not the signed image of any TRS tool version: refusing an unsigned image",
                subject=reference,
            )
        digests = {p["signed_digest"] for p in pins}
        if len(digests) > 1:
            raise VerificationError(
                f"image {reference} names different signed digests in several TRS versions "
                f"({', '.join(sorted(digests))}); pin it as name@sha256:<digest>",
                subject=reference,
            )
        return pins[0]

    def bundle(self, tool_id: str, version_id: str) -> str:
        """The version's own signature bundle; "" when it has none (an unsigned version)."""
        if "trs" in self.platform.served:
            from helixgate.errors import NotFound
            from trs_registry.domain import TrsRegistry

            try:
                return str(self.platform.domain(TrsRegistry).bundle(tool_id, version_id))
            except NotFound:
                return ""
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        try:
            return self.client.request("GET", f"/x-helixgate/tools/{t}/versions/{v}/bundle").text
        except ClientError as exc:
            if exc.status == 404:
                return ""
            raise

    def trust_policy(self) -> Any:
        """The signature policy: configured locally, or the registry's published keys (cached
        a minute, so a revoked key stops verifying within a minute on every worker)."""
        from helixgate.signing import build_trust_policy

        with self._trust_lock:
            if self._trust is None or time.monotonic() - self._trust_at > 60:
                settings = self.platform.settings
                material = self.trust_material() if settings.signer == "key" else None
                self._trust = build_trust_policy(settings, material)
                self._trust_at = time.monotonic()
            return self._trust

    def signed_version(self, tool_id: str, version_id: str) -> Any:
        """The verified facts (``gate.SignedTool``) of a version, from its own bundle."""
        from wes_server.gate import signed_tool

        key = (tool_id, version_id)
        with self._trust_lock:
            cached = self._bundles.get(key)
        if cached is None or time.monotonic() - cached[0] > 60:
            cached = (time.monotonic(), self.bundle(tool_id, version_id))
            with self._trust_lock:
                self._bundles[key] = cached
        return signed_tool(cached[1], policy=self.trust_policy(), tool_id=tool_id, version_id=version_id)

    def trust_material(self) -> dict[str, Any]:
        if "trs" in self.platform.served:
            from trs_registry.domain import TrsRegistry

            return dict(self.platform.domain(TrsRegistry).trust_material())
        return self.client.get_object("/x-helixgate/signing/trust")

    def version(self, tool_id: str, version_id: str) -> dict[str, Any]:
        return self.client.get_object(f"/tools/{quote(tool_id, safe='')}/versions/{quote(version_id, safe='')}")


def _pin(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool_id": p["tool_id"],
        "version_id": p["version_id"],
        "pinned_ref": p["image_name"],
        "image_id": p["config_digest"],
        "signed_digest": p["signed_digest"],
        "digest_kind": p["digest_kind"],
    }
