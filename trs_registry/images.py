"""Image resolution: the registry pins every image reference itself.

A reference with a registry host (``127.0.0.1:5000/tools/bwa:1.0``) is resolved over the
Docker Registry HTTP API v2: the manifest is fetched with an ``Accept`` header listing OCI
and Docker v2 manifests and indexes, its SHA-256 is computed here (and must equal the
``Docker-Content-Digest`` header when the registry sends one), and the config digest is
read from the manifest (for an index: from the manifest of the engine's platform). The
config digest is the image id the engine will show after pulling by the manifest digest.

A reference without a registry host (``helixgate/bwa:1.0``, ``sha256:<id>``) is a
local-only image and is resolved against the local Docker engine: only an image id exists.

A digest in the reference (``name@sha256:...``) is what the client *expects*; it is never
taken as the answer. Nothing is pulled.
"""

from __future__ import annotations

import hashlib
import json
import platform as host_platform
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import requests

from helixgate.errors import BadRequest, IntegrityError, UpstreamError
from helixgate.images import DIGEST as _DIGEST
from helixgate.images import ImageReference, parse_reference, pinned_name
from helixgate.netguard import check_destination

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES + INDEX_MEDIA_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


# ---------------------------------------------------------------- references
# The grammar is the platform's one (helixgate.images); re-exported for the resolver's callers.
__all__ = ["ImageReference", "ImageResolver", "ResolvedImage", "parse_reference"]


# ---------------------------------------------------------------- resolution results
@dataclass(frozen=True)
class ResolvedImage:
    """An image pinned by the registry."""

    reference: str
    source: str  # "registry" | "local"
    registry_host: str
    repository: str
    tag: str
    manifest_digest: str  # "sha256:<hex>", "" for local-only images
    config_digest: str  # "sha256:<hex>": the image id
    media_type: str
    size: int | None

    @property
    def pinned_name(self) -> str:
        """``host/repo@sha256:<manifest>``, or the image id for local-only images."""
        host = self.registry_host if self.source == "registry" else ""
        return pinned_name(host, self.repository, self.manifest_digest, self.config_digest)

    @property
    def subject_name(self) -> str:
        """The in-toto subject name: the image name without tag or digest."""
        if self.source == "registry":
            return f"{self.registry_host}/{self.repository}"
        return self.repository or self.config_digest

    @property
    def signed_digest(self) -> str:
        return self.manifest_digest if self.source == "registry" else self.config_digest

    @property
    def digest_kind(self) -> str:
        return "manifest" if self.source == "registry" else "image-id"


def _mismatch(ref: ImageReference, expected: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"image {ref.original[:200]} resolves to {actual}, not the expected {expected}",
        subject=ref.original[:200],
        expected=expected,
        actual=actual,
        status=409,
    )


# ---------------------------------------------------------------- the resolver
class ImageResolver:
    """Resolves references against OCI registries (requests) and the local engine (docker SDK)."""

    def __init__(
        self,
        *,
        insecure_hosts: Collection[str] = (),
        allow_private_addresses: bool = False,
        allowed_hosts: Collection[str] = (),
        ca_bundle: str = "",
        docker_client_factory: Callable[[], Any] | None = None,
        timeout: float = 20.0,
        session: requests.Session | None = None,
    ) -> None:
        self._insecure = frozenset(h.lower() for h in insecure_hosts)
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._allow_private = allow_private_addresses
        self._verify: bool | str = ca_bundle or True
        self._timeout = timeout
        self._session = session or requests.Session()
        self._session.trust_env = False  # no proxies or netrc credentials picked up from the environment
        self._docker_factory = docker_client_factory
        self._docker: Any = None
        self._docker_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ImageResolver(insecure_hosts={sorted(self._insecure)!r})"

    def close(self) -> None:
        self._session.close()
        if self._docker is not None:
            self._docker.close()

    def resolve(self, reference: str, expected_digest: str | None = None) -> ResolvedImage:
        """Pin ``reference``; ``expected_digest`` (the client's) must match what is resolved here."""
        ref = parse_reference(reference)
        resolved = self._resolve_local(ref) if ref.is_local else self._resolve_registry(ref)
        for source, expected in (("reference", ref.digest), ("digest", expected_digest)):
            if not expected:
                continue
            exp = expected.strip().lower()
            if not _DIGEST.match(exp):
                raise BadRequest(
                    f"expected digest for image {reference[:200]} must be sha256:<64 hex>, got {expected[:80]!r}"
                )
            if resolved.source == "local":
                allowed = {resolved.config_digest}
            elif source == "reference":
                allowed = {resolved.manifest_digest}  # name@digest names a manifest, as for docker pull
            else:
                allowed = {resolved.manifest_digest, resolved.config_digest}
            if exp not in allowed:
                raise _mismatch(ref, exp, resolved.signed_digest)
        return resolved

    # ------------------------------------------------------------ local engine
    def _client(self) -> Any:
        with self._docker_lock:
            if self._docker is None:
                if self._docker_factory is None:
                    import docker

                    self._docker_factory = docker.from_env
                try:
                    self._docker = self._docker_factory()
                except Exception as exc:  # docker.errors.DockerException: engine not reachable
                    raise UpstreamError(f"the local Docker engine is not reachable: {str(exc)[:200]}") from None
            return self._docker

    def _resolve_local(self, ref: ImageReference) -> ResolvedImage:
        import docker.errors

        client = self._client()
        # name@sha256:<id> with no registry can only mean an image id: the engine has no manifest for it
        lookup = f"{ref.repository}:{ref.tag}" if ref.tag else str(ref.digest)
        try:
            info = client.api.inspect_image(lookup)
        except docker.errors.ImageNotFound:
            raise BadRequest(f"image {ref.original[:200]} does not exist in the local Docker engine") from None
        except docker.errors.APIError as exc:
            raise UpstreamError(
                f"the local Docker engine could not inspect {ref.original[:200]}: {str(exc)[:200]}"
            ) from None
        image_id = str(info.get("Id", ""))
        if not _DIGEST.match(image_id):
            raise UpstreamError(f"the local Docker engine returned an unexpected image id {image_id[:80]!r}")
        if not ref.tag and image_id != ref.digest:
            raise _mismatch(ref, str(ref.digest), image_id)
        size = info.get("Size")
        return ResolvedImage(
            reference=ref.original,
            source="local",
            registry_host="",
            repository=ref.repository,
            tag=ref.tag or "",
            manifest_digest="",
            config_digest=image_id,
            media_type="",
            size=int(size) if isinstance(size, int) else None,
        )

    # ------------------------------------------------------------ registry
    def _scheme(self, host: str) -> str:
        return "http" if host.lower() in self._insecure else "https"

    def _check_host(self, host: str) -> None:
        """SSRF guard (helixgate.netguard): registries on private addresses only when configured."""
        allow = tuple(self._insecure | self._allowed)
        check_destination(f"{self._scheme(host)}://{host}/", allow_list=allow, allow_private=self._allow_private)

    def _resolve_registry(self, ref: ImageReference) -> ResolvedImage:
        assert ref.registry is not None
        self._check_host(ref.registry)
        base = f"{self._scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}"
        token: list[str | None] = [None]
        # By tag when there is one (a tag@digest reference must still match the tag's current digest).
        wanted = ref.tag or ref.digest or ""
        body, media_type, header_digest = self._get_manifest(ref, base, wanted, token)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if header_digest and header_digest != digest:
            raise IntegrityError(
                f"registry {ref.registry} sent manifest {ref.original[:200]} whose sha256 is {digest}, "
                f"but its Docker-Content-Digest header says {header_digest}",
                subject=ref.original[:200],
                expected=header_digest,
                actual=digest,
                status=502,
            )
        if ref.tag is None and ref.digest and digest != ref.digest:
            raise _mismatch(ref, ref.digest, digest)
        manifest = _json_object(body, ref)
        media_type = str(manifest.get("mediaType") or media_type)
        size: int | None
        if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
            child = self._platform_manifest(ref, manifest)
            child_body, child_type, _ = self._get_manifest(ref, base, child, token)
            child_digest = "sha256:" + hashlib.sha256(child_body).hexdigest()
            if child_digest != child:
                raise IntegrityError(
                    f"registry {ref.registry} served platform manifest {child} with sha256 {child_digest}",
                    subject=ref.original[:200],
                    expected=child,
                    actual=child_digest,
                    status=502,
                )
            config_digest, size = _config_of(_json_object(child_body, ref), ref)
        else:
            config_digest, size = _config_of(manifest, ref)
        return ResolvedImage(
            reference=ref.original,
            source="registry",
            registry_host=ref.registry,
            repository=ref.repository,
            tag=ref.tag or "",
            manifest_digest=digest,
            config_digest=config_digest,
            media_type=media_type,
            size=size,
        )

    def _platform_manifest(self, ref: ImageReference, index: dict[str, Any]) -> str:
        arch = _ARCH.get(host_platform.machine().lower(), host_platform.machine().lower())
        for entry in index.get("manifests") or []:
            if not isinstance(entry, dict):
                continue
            plat = entry.get("platform") or {}
            if plat.get("os") == "linux" and plat.get("architecture") == arch:
                digest = str(entry.get("digest", ""))
                if not _DIGEST.match(digest):
                    break
                return digest
        raise BadRequest(f"image {ref.original[:200]} has no linux/{arch} manifest in its index")

    def _get_manifest(
        self, ref: ImageReference, base: str, reference: str, token: list[str | None]
    ) -> tuple[bytes, str, str | None]:
        url = f"{base}/manifests/{reference}"
        resp = self._request(url, token, ref)
        if resp.status_code == 401:
            token[0] = self._anonymous_token(ref, resp)
            resp.close()
            resp = self._request(url, token, ref)
        try:
            if resp.status_code == 404:
                what = f"tag {ref.tag}" if reference == ref.tag else f"manifest {reference}"
                raise BadRequest(
                    f"image {ref.original[:200]} does not resolve: {what} not found in {ref.registry}/{ref.repository}"
                )
            if resp.status_code in (401, 403):
                raise BadRequest(
                    f"image {ref.original[:200]} does not resolve: registry {ref.registry} refused anonymous access "
                    f"(HTTP {resp.status_code})"
                )
            if resp.status_code != 200:
                raise UpstreamError(
                    f"registry {ref.registry} answered HTTP {resp.status_code} for the manifest of {ref.original[:200]}"
                )
            body = _read_capped(resp, MAX_MANIFEST_BYTES, ref)
            header = resp.headers.get("Docker-Content-Digest")
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        finally:
            resp.close()
        if header is not None and not _DIGEST.match(header.strip()):
            raise UpstreamError(f"registry {ref.registry} sent a malformed Docker-Content-Digest header")
        return body, content_type, header.strip() if header else None

    def _request(self, url: str, token: list[str | None], ref: ImageReference) -> requests.Response:
        headers = {"Accept": ACCEPT}
        if token[0]:
            headers["Authorization"] = f"Bearer {token[0]}"
        try:
            return self._session.get(
                url, headers=headers, timeout=self._timeout, verify=self._verify, allow_redirects=False, stream=True
            )
        except requests.RequestException as exc:
            raise UpstreamError(f"registry {ref.registry} is not reachable: {type(exc).__name__}") from None

    def _anonymous_token(self, ref: ImageReference, resp: requests.Response) -> str:
        """The Docker token flow with no credentials: GET <realm>?service=..&scope=.."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise BadRequest(
                f"image {ref.original[:200]} does not resolve: registry {ref.registry} requires authentication"
            )
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise UpstreamError(f"registry {ref.registry} sent an unusable token realm")
        if realm.startswith("http://") and ref.registry and ref.registry.lower() not in self._insecure:
            raise UpstreamError(f"registry {ref.registry} sent a plain-http token realm; refusing")
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        try:
            token_resp = self._session.get(
                realm, params=query, timeout=self._timeout, verify=self._verify, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise UpstreamError(
                f"token service of registry {ref.registry} is not reachable: {type(exc).__name__}"
            ) from None
        if token_resp.status_code != 200:
            raise BadRequest(
                f"image {ref.original[:200]} does not resolve: registry {ref.registry} refused an anonymous pull token "
                f"(HTTP {token_resp.status_code})"
            )
        try:
            data = token_resp.json()
        except ValueError:
            raise UpstreamError(f"token service of registry {ref.registry} answered with no JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"token service of registry {ref.registry} returned no token")
        return token


def _read_capped(resp: requests.Response, limit: int, ref: ImageReference) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_content(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise UpstreamError(f"manifest of {ref.original[:200]} is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes, ref: ImageReference) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UpstreamError(f"manifest of {ref.original[:200]} is not JSON") from None
    if not isinstance(doc, dict):
        raise UpstreamError(f"manifest of {ref.original[:200]} is not a JSON object")
    return doc


def _config_of(manifest: dict[str, Any], ref: ImageReference) -> tuple[str, int | None]:
    if manifest.get("schemaVersion") != 2:
        raise BadRequest(f"image {ref.original[:200]}: only schema 2 (OCI / Docker v2) manifests are supported")
    config = manifest.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise UpstreamError(f"manifest of {ref.original[:200]} has no valid config digest")
    size = 0
    for part in [config, *(manifest.get("layers") or [])]:
        if isinstance(part, dict) and isinstance(part.get("size"), int):
            size += part["size"]
    return digest, size or None
