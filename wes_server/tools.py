"""WES's policy over the tool port: which signed version covers a task's image, the trust
policy (cached a minute, so a revoked key stops verifying within a minute on every worker)
and each version's verified facts, from its own bundle (cached a minute too).

The port (``helixgate.ports.ToolPort``) only fetches; every rule here is WES's.
"""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

from helixgate.config import Settings
from helixgate.errors import BadRequest, VerificationError
from helixgate.ports import DescriptorFile, ImagePin, ToolPort
from helixgate.signing import TrustPolicy, build_trust_policy
from helixgate.uris import require_clean, scheme_of
from wes_server.gate import SignedTool, signed_tool

_TRS_URL = re.compile(r"/ga4gh/trs/v2/tools/([^/]+)/versions/([^/]+)")
CACHE_SECONDS = 60.0


def parse_trs_reference(url: str, settings: Settings) -> tuple[str, str] | None:
    """``trs://host/<tool>/<version>`` or a TRS version URL -> (tool id, version id)."""
    scheme = scheme_of(url)
    if scheme == "trs":
        parts = require_clean(url, "workflow_url")[len("trs://") :].split("/")
        if len(parts) != 3 or not all(parts):
            raise BadRequest("TRS workflow_url must be trs://<host>/<tool id>/<version id>")
        return parts[1], parts[2]
    if scheme in ("http", "https"):
        trs_host = urlsplit(settings.effective_trs_url).netloc.lower()
        parsed = urlsplit(require_clean(url, "workflow_url"))
        m = _TRS_URL.search(parsed.path)
        if m and parsed.netloc.lower() == trs_host:
            return m.group(1), m.group(2)
    return None


def choose_pin(reference: str, pins: list[ImagePin], prefer: tuple[str, str] | None = None) -> ImagePin:
    """The signed TRS version covering ``reference``; refuses unsigned or ambiguous images.

    With ``prefer`` (the run came from that TRS version) only that version's own pin is
    accepted: a task never runs under another version's signature. Otherwise a tag
    published in several versions with different digests is ambiguous unless the
    reference carries the digest.
    """
    if prefer is not None:
        for p in pins:
            if (p.tool_id, p.version_id) == prefer:
                return p
        raise VerificationError(
            f"image {reference} is not the signed image of tool version {prefer[0]}:{prefer[1]} "
            "that this run executes: refusing (no other version's signature counts)",
            subject=reference,
            expected=f"{prefer[0]}:{prefer[1]}",
            actual=", ".join(f"{p.tool_id}:{p.version_id}" for p in pins[:5]) or "no signed version",
        )
    if not pins:
        raise VerificationError(
            f"image {reference} is not the signed image of any TRS tool version: refusing an unsigned image",
            subject=reference,
        )
    digests = {p.signed_digest for p in pins}
    if len(digests) > 1:
        raise VerificationError(
            f"image {reference} names different signed digests in several TRS versions "
            f"({', '.join(sorted(digests))}); pin it as name@sha256:<digest>",
            subject=reference,
        )
    return pins[0]


class SignedVersions:
    """What WES knows about signed tool versions, through the tool port."""

    def __init__(self, port: ToolPort, settings: Settings) -> None:
        self.port = port
        self.settings = settings
        self._trust: TrustPolicy | None = None
        self._trust_at = 0.0
        self._bundles: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def descriptors(self, tool_id: str, version_id: str, language: str = "CWL") -> list[DescriptorFile]:
        return self.port.descriptors(tool_id, version_id, language)

    def image_pin(self, reference: str, prefer: tuple[str, str] | None = None) -> ImagePin:
        return choose_pin(reference, self.port.image_pins(reference), prefer)

    def trust_policy(self) -> TrustPolicy:
        """The signature policy: configured locally, or the registry's published keys."""
        with self._lock:
            if self._trust is None or time.monotonic() - self._trust_at > CACHE_SECONDS:
                material = self.port.trust_material().as_json() if self.settings.signer == "key" else None
                self._trust = build_trust_policy(self.settings, material)
                self._trust_at = time.monotonic()
            return self._trust

    def signed_version(self, tool_id: str, version_id: str) -> SignedTool:
        """The verified facts of a version, from its own bundle."""
        key = (tool_id, version_id)
        with self._lock:
            cached = self._bundles.get(key)
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            cached = (time.monotonic(), self.port.bundle(tool_id, version_id))
            with self._lock:
                self._bundles[key] = cached
        return signed_tool(cached[1], policy=self.trust_policy(), tool_id=tool_id, version_id=version_id)
