"""The HTTP implementations of the core ports: generic GA4GH clients (DRS 1.5 + HelixGate's
write extension, TRS 2.0.1 + its signing extension), authenticated as the service identity
by a token source, acting on a user's behalf through ``X-HelixGate-On-Behalf-Of``.

The remote service audits each request itself (its request guard), so nothing here writes
an audit record. Errors come back as the core's error classes with DRS's/TRS's own
message, so a caller cannot tell this implementation from the in-process one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast
from urllib.parse import quote

from helixgate.client import ApiClient, ClientError
from helixgate.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HelixGateError,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamError,
)
from helixgate.ports import (
    CWL_DESCRIPTOR_TYPES,
    DataObject,
    DescriptorFile,
    Download,
    ImagePin,
    Provenance,
    TrustMaterial,
    check_descriptor,
    receive_verified,
    require_primary,
    sha256_from_checksums,
)
from helixgate.web import ON_BEHALF_HEADER

if TYPE_CHECKING:
    from helixgate.platform import Platform

DRS_BASE = "/ga4gh/drs/v1"
TRS_BASE = "/ga4gh/trs/v2"
_BY_STATUS: dict[int, type[HelixGateError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def domain_error(exc: ClientError) -> HelixGateError:
    """The core error a peer's HTTP answer stands for, with the peer's own message."""
    message = exc.message
    prefix = f"HTTP {exc.status}: "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if exc.status == 422:
        return IntegrityError(message)
    cls = _BY_STATUS.get(exc.status)
    return cls(message) if cls is not None else exc


def _json_object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise UpstreamError(f"{what}: the peer answered with something other than a JSON object")
    return cast(Mapping[str, object], value)


class HttpDataPort:
    """``DataPort`` over DRS's HTTP API."""

    def __init__(self, service_url: str, token: Callable[[], str], *, verify: bool | str = True) -> None:
        self.client = ApiClient(service_url.rstrip("/") + DRS_BASE, token, verify=verify)

    @staticmethod
    def _as(user: str) -> dict[str, str]:
        return {ON_BEHALF_HEADER: user}

    def _object_json(self, user: str, object_id: str) -> Mapping[str, object]:
        try:
            raw = self.client.get_json(f"/objects/{quote(object_id, safe='')}", headers=self._as(user))
        except ClientError as exc:
            raise domain_error(exc) from None
        return _json_object(raw, f"DRS object {object_id}")

    def lookup(self, user: str, object_id: str) -> DataObject:
        return DataObject.from_drs_json(self._object_json(user, object_id))

    def unreadable(self, user: str, object_ids: Sequence[str]) -> list[str]:
        refused = []
        for object_id in object_ids:
            try:
                self._object_json(user, object_id)
            except (Unauthorized, Forbidden, NotFound):
                refused.append(object_id)
        return refused

    def download(self, user: str, object_id: str, dest: Path) -> Download:
        raw = self._object_json(user, object_id)
        obj = DataObject.from_drs_json(raw)
        methods = raw.get("access_methods")
        access = next(
            (
                m
                for m in (methods if isinstance(methods, list) else [])
                if isinstance(m, Mapping) and m.get("type") == "https"
            ),
            None,
        )
        if access is None:
            raise IntegrityError(f"DRS object {object_id} has no https access method", subject=object_id)
        subject = f"input {obj.self_uri}"
        try:
            inline = access.get("access_url")
            if isinstance(inline, Mapping):
                url = str(inline.get("url"))
            else:
                path = f"/objects/{quote(object_id, safe='')}/access/{quote(str(access.get('access_id')), safe='')}"
                url = str(_json_object(self.client.get_json(path, headers=self._as(user)), "access URL").get("url"))
            sha, size = receive_verified(
                self.client.stream(url, headers=self._as(user)), dest, obj.sha256, subject=subject
            )
        except ClientError as exc:
            if exc.status in (409, 422):  # DRS refused: integrity failure / quarantined object
                raise IntegrityError(f"{subject} refused by DRS: {exc.message}", subject=subject) from None
            raise domain_error(exc) from None
        except UpstreamError:  # the stream was cut: DRS aborts it on a digest mismatch
            raise IntegrityError(
                f"{subject}: download aborted before the end (integrity check failed?)", subject=subject
            ) from None
        return Download(sha, size, obj)

    def upload(
        self,
        user: str,
        stream: BinaryIO,
        *,
        name: str,
        sha256: str,
        provenance: Provenance,
        mime_type: str = "application/octet-stream",
    ) -> DataObject:
        params = {"name": name, "sha256": sha256, "mime_type": mime_type, "provenance": provenance.as_json()}
        try:
            resp = self.client.request(
                "POST",
                "/x-helixgate/objects",
                params=params,
                data=stream,
                headers={**self._as(user), "Content-Type": "application/octet-stream"},
            )
        except ClientError as exc:
            if exc.status == 422:
                raise IntegrityError(f"output {name} refused by DRS: {exc.message}", subject=name) from None
            raise domain_error(exc) from None
        return DataObject.from_drs_json(_json_object(resp.json(), f"uploaded object {name}"))


class HttpToolPort:
    """``ToolPort`` over TRS's HTTP API."""

    def __init__(self, service_url: str, token: Callable[[], str], *, verify: bool | str = True) -> None:
        self.client = ApiClient(service_url.rstrip("/") + TRS_BASE, token, verify=verify)

    def _get(self, path: str, **kwargs: object) -> object:
        try:
            return self.client.get_json(path, **kwargs)
        except ClientError as exc:
            raise domain_error(exc) from None

    def descriptors(self, tool_id: str, version_id: str, language: str = "CWL") -> list[DescriptorFile]:
        t, v, lang = quote(tool_id, safe=""), quote(version_id, safe=""), quote(language, safe="")
        listing = self._get(f"/tools/{t}/versions/{v}/{lang}/files")
        out = []
        for entry in listing if isinstance(listing, list) else []:
            if not isinstance(entry, Mapping) or entry.get("file_type") not in CWL_DESCRIPTOR_TYPES:
                continue
            path = str(entry.get("path"))
            recorded = sha256_from_checksums(entry.get("checksum"), f"TRS file {path}")
            wrapper = _json_object(self._get(f"/tools/{t}/versions/{v}/{lang}/descriptor/{quote(path)}"), path)
            content = str(wrapper.get("content") or "").encode()
            actual = check_descriptor(tool_id, version_id, path, recorded, content)
            out.append(DescriptorFile(path, content, actual, entry.get("file_type") == "PRIMARY_DESCRIPTOR"))
        return require_primary(out, tool_id, version_id, language)

    def bundle(self, tool_id: str, version_id: str) -> str:
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        try:
            return self.client.request("GET", f"/x-helixgate/tools/{t}/versions/{v}/bundle").text
        except ClientError as exc:
            if exc.status == 404:
                return ""
            raise domain_error(exc) from None

    def trust_material(self) -> TrustMaterial:
        return TrustMaterial.from_json(_json_object(self._get("/x-helixgate/signing/trust"), "trust material"))

    def image_pins(self, reference: str) -> list[ImagePin]:
        body = _json_object(self._get("/x-helixgate/images", params={"reference": reference}), "image pins")
        pins = body.get("pins")
        return [
            ImagePin(
                tool_id=str(p["tool_id"]),
                version_id=str(p["version_id"]),
                pinned_ref=str(p["image_name"]),
                image_id=str(p["config_digest"]),
                signed_digest=str(p["signed_digest"]),
                digest_kind=str(p["digest_kind"]),
            )
            for p in (pins if isinstance(pins, list) else [])
            if isinstance(p, Mapping)
        ]


# ---------------------------------------------------------------- wiring
def http_data_port(platform: Platform) -> HttpDataPort:
    """DRS at ``drs_url``, as the service identity, verifying TLS against ``tls_ca_bundle``."""
    s = platform.settings
    return HttpDataPort(s.effective_drs_url, platform.service_token, verify=s.tls_ca_bundle or True)


def http_tool_port(platform: Platform) -> HttpToolPort:
    """TRS at ``trs_url``, as the service identity, verifying TLS against ``tls_ca_bundle``."""
    s = platform.settings
    return HttpToolPort(s.effective_trs_url, platform.service_token, verify=s.tls_ca_bundle or True)
