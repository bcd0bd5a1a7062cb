"""TRS 2.0.1 handlers plus the HelixGate publish/signing extension (openapi/trs.yaml).

Thin: parse, call ``TrsRegistry``, shape the response. Authentication, the permission
check and the request audit happen in the guard (helixgate.web); handlers add the domain
audit (``audit_change``) and security events for integrity and signature refusals.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from helixgate.errors import BadRequest, IntegrityError, NotFound, PayloadTooLarge, Unauthorized
from helixgate.limits import bounded_int
from helixgate.service_info import ServiceType, base_service_info
from helixgate.web import audit_change, caller, platform, security_event, set_target
from trs_registry import shapes, validation
from trs_registry.declaration import SERVICE
from trs_registry.domain import PublisherSignatureRefused, ToolQuery, TrsRegistry
from trs_registry.validation import ALL_DESCRIPTOR_TYPES, MAX_REQUEST_BYTES

MAX_PAGE = 1000
MAX_OFFSET = 2**31 - 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_ALIAS_PREFIXES = ("#workflow/", "#tool/")


# ---------------------------------------------------------------- helpers
def _registry() -> TrsRegistry:
    return platform().domain(TrsRegistry)


def _base() -> str:
    return platform().settings.effective_trs_url + SERVICE.base_path


def _json(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, mimetype: str = "application/json"
) -> Response:
    resp = Response(json.dumps(body), status=status, mimetype=mimetype)
    for k, val in (headers or {}).items():
        resp.headers[k] = val
    return resp


def _text(content: bytes) -> Response:
    return Response(content, status=200, mimetype="text/plain")


def _actor() -> str:
    user = caller().username
    if user is None:  # the guard lets no anonymous caller reach a write operation
        raise Unauthorized("authentication required")
    return user


def _body() -> dict[str, Any]:
    """The JSON object body, refusing oversized requests before they are parsed."""
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_REQUEST_BYTES} bytes")
    request.max_content_length = MAX_REQUEST_BYTES
    try:
        data = request.get_json(silent=True)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is larger than {MAX_REQUEST_BYTES} bytes") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object (Content-Type: application/json)")
    return data


@contextlib.contextmanager
def _security_checked(action: str, target: str) -> Iterator[None]:
    """Record integrity, verification and publisher-signature refusals as security events."""
    try:
        yield
    except IntegrityError as exc:
        security_event(action, target=target, details={"reason": exc.message, **exc.details})
        raise
    except PublisherSignatureRefused as exc:
        security_event(f"{action}.publisher_signature", target=target, details={"reason": exc.message, **exc.details})
        raise


def _descriptor_type(type_: str) -> tuple[str, bool]:
    """``PLAIN_CWL`` -> ("CWL", True); unknown types are a 400."""
    plain = type_.startswith("PLAIN_")
    base = type_[len("PLAIN_") :] if plain else type_
    if base not in ALL_DESCRIPTOR_TYPES:
        raise BadRequest(f"unknown descriptor type {type_[:40]!r}")
    return base, plain


def _target(id_: str, version_id: str | None = None) -> str:
    target = id_ if version_id is None else f"{id_}:{version_id}"
    set_target(target)
    return target


# ---------------------------------------------------------------- GA4GH TRS 2.0.1
TRS_TYPE = ServiceType("trs", "org.ga4gh", "trs", "2.0.1", "HelixGate tool registry")


def get_service_info() -> dict[str, Any]:
    s = platform().settings
    return base_service_info(TRS_TYPE, s.effective_public_url, urlsplit(s.effective_trs_url).netloc)


def tool_classes_get() -> Response:
    return _json(shapes.tool_classes())


def tools_get(
    id: str | None = None,  # noqa: A002 - the spec's parameter name
    alias: str | None = None,
    toolClass: str | None = None,  # noqa: N803
    descriptorType: str | None = None,  # noqa: N803
    registry: str | None = None,
    organization: str | None = None,
    name: str | None = None,
    toolname: str | None = None,
    description: str | None = None,
    author: str | None = None,
    checker: bool | None = None,
    offset: str | None = None,
    limit: int | None = None,
) -> Response:
    text = "" if offset is None else str(offset)
    if text and (not text.isascii() or not text.isdigit() or len(text) > 10):
        raise BadRequest(f"offset must be an integer between 0 and {MAX_OFFSET}, got {text[:40]!r}")
    start = bounded_int(int(text) if text else 0, "offset", 0, MAX_OFFSET)
    size = MAX_PAGE if limit is None else limit
    if not 1 <= size <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
    query = ToolQuery(
        id=id,
        alias=alias,
        tool_class=toolClass,
        descriptor_type=descriptorType,
        registry=registry,
        organization=organization,
        name=name,
        toolname=toolname,
        description=description,
        author=author,
        checker=checker,
    )
    tools, total = _registry().list_tools(query, start, size)
    base = _base()
    filters = {k: val for k, val in request.args.items() if k not in ("offset", "limit")}

    def link(at: int) -> str:
        return f"{base}/tools?{urlencode({**filters, 'offset': str(at), 'limit': str(size)})}"

    last = max(0, ((total - 1) // size) * size) if total else 0
    headers = {
        "self_link": link(start),
        "last_page": link(last),
        "current_offset": str(start),
        "current_limit": str(size),
    }
    if start + size < total:
        headers["next_page"] = link(start + size)
    return _json([shapes.tool(base, t) for t in tools], headers=headers)


def tools_id_get(id: str) -> Response:  # noqa: A002
    _target(id)
    return _json(shapes.tool(_base(), _registry().get_tool(id)))


def tools_id_versions_get(id: str) -> Response:  # noqa: A002
    _target(id)
    base = _base()
    return _json([shapes.tool_version(base, ver) for ver in _registry().list_versions(id)])


def tools_id_versions_version_id_get(id: str, version_id: str) -> Response:  # noqa: A002
    _target(id, version_id)
    return _json(shapes.tool_version(_base(), _registry().get_version(id, version_id)))


def _descriptor_response(id_: str, version_id: str, type_: str, relative_path: str | None) -> Response:
    _target(id_, version_id)
    dtype, plain = _descriptor_type(type_)
    fc = _registry().descriptor(id_, version_id, dtype, relative_path)
    if plain:
        return _text(fc.content)
    return _json(shapes.file_wrapper(_base(), id_, version_id, fc))


def tools_id_versions_version_id_type_descriptor_get(id: str, version_id: str, type: str) -> Response:  # noqa: A002
    return _descriptor_response(id, version_id, type, None)


def tools_id_versions_version_id_type_descriptor_relative_path_get(
    id: str,
    version_id: str,
    type: str,
    relative_path: str,  # noqa: A002
) -> Response:
    return _descriptor_response(id, version_id, type, relative_path)


def tools_id_versions_version_id_type_tests_get(id: str, version_id: str, type: str) -> Response:  # noqa: A002
    _target(id, version_id)
    dtype, _plain = _descriptor_type(type)
    files = _registry().version_files(id, version_id, dtype, with_content=True)
    base = _base()
    return _json([shapes.file_wrapper(base, id, version_id, f) for f in files if f.info.file_type == "TEST_FILE"])


def _files_response(id_: str, version_id: str, dtype: str, fmt: str | None) -> Response:
    _target(id_, version_id)
    registry = _registry()
    if fmt == "zip":
        files = registry.version_files(id_, version_id, dtype, with_content=True)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                info = zipfile.ZipInfo(f.info.path, date_time=_ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f.content)
        resp = Response(buf.getvalue(), status=200, mimetype="application/zip")
        name = f"{id_}-{version_id}-{dtype}.zip".replace('"', "")
        resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return resp
    if fmt not in (None, ""):
        raise BadRequest(f"format must be 'zip', got {fmt[:40]!r}")
    files = registry.version_files(id_, version_id, dtype)
    return _json([shapes.tool_file(f.info) for f in files])


def tools_id_versions_version_id_type_files_get(
    id: str,
    version_id: str,
    type: str,
    format: str | None = None,  # noqa: A002
) -> Response:
    dtype, _plain = _descriptor_type(type)
    return _files_response(id, version_id, dtype, format)


def tools_id_versions_version_id_containerfile_get(id: str, version_id: str) -> Response:  # noqa: A002
    _target(id, version_id)
    files = [
        f for f in _registry().version_files(id, version_id, with_content=True) if f.info.file_type == "CONTAINERFILE"
    ]
    if not files:
        raise NotFound(f"version {version_id} of tool {id} has no containerfile")
    base = _base()
    return _json([shapes.file_wrapper(base, id, version_id, f) for f in files])


# ---------------------------------------------------------------- cwltool's pre-2.0 paths
def _alias_id(id_: str) -> str:
    for prefix in _ALIAS_PREFIXES:
        if id_.startswith(prefix):
            return id_[len(prefix) :]
    return id_


def cwltool_files_get(id: str, version_id: str) -> Response:  # noqa: A002
    tool_id = _alias_id(id)
    return _files_response(tool_id, _registry().resolve_version_id(tool_id, version_id), "CWL", None)


def cwltool_plain_descriptor_get(id: str, version_id: str) -> Response:  # noqa: A002
    tool_id = _alias_id(id)
    return _descriptor_response(tool_id, _registry().resolve_version_id(tool_id, version_id), "PLAIN_CWL", None)


def cwltool_plain_descriptor_relative_path_get(id: str, version_id: str, relative_path: str) -> Response:  # noqa: A002
    tool_id = _alias_id(id)
    return _descriptor_response(
        tool_id, _registry().resolve_version_id(tool_id, version_id), "PLAIN_CWL", relative_path
    )


# ---------------------------------------------------------------- publish extension
def create_tool() -> Response:
    actor = _actor()
    tool = _registry().create_tool(actor, validation.new_tool(_body()))
    _target(tool.id)
    audit_change(
        "trs.tool.create",
        tool.id,
        details={
            "organization": tool.organization,
            "name": tool.name,
            "toolclass": tool.toolclass,
            "required_publisher_identities": list(tool.required_publisher_identities),
        },
    )
    return _json(shapes.tool_record(_base(), tool), 201)


def get_tool_record(id: str) -> Response:  # noqa: A002
    _target(id)
    return _json(shapes.tool_record(_base(), _registry().get_tool(id)))


def update_tool(id: str) -> Response:  # noqa: A002
    target = _target(id)
    body = _body()
    tool, changed = _registry().update_tool(_actor(), id, validation.tool_edit(body))
    if changed:
        audit_change(
            "trs.tool.update",
            target,
            details={
                "fields": changed,
                "meta_version": tool.meta_version,
                "values": {k: body[k] for k in changed if k != "description"},
            },
        )
    return _json(shapes.tool_record(_base(), tool))


def publish_tool_version(id: str) -> Response:  # noqa: A002
    target = _target(id)
    body = _body()
    with _security_checked("trs.publish.refused", target):
        ver = _registry().publish_version(_actor(), id, validation.publish_spec(body))
    target = _target(id, ver.version_id)
    audit_change(
        "trs.version.publish",
        target,
        details={
            "files": {f.path: f.sha256 for f in ver.files},
            "images": [
                {"reference": i.reference, "pinned": i.pinned_name, "config_digest": i.config_digest}
                for i in ver.images
            ],
            "signer": ver.signer,
            "signer_kind": ver.signer_kind,
            "subject_digest": ver.signed_digest,
            "publisher_signer": ver.publisher_signer or None,
        },
    )
    return _json(shapes.tool_version(_base(), ver), 201)


def get_tool_version_record(id: str, version_id: str, include_content: bool = False) -> Response:  # noqa: A002
    _target(id, version_id)
    registry = _registry()
    ver = registry.get_version(id, version_id)
    contents = None
    if include_content:
        contents = {f.info.path: f.content for f in registry.version_files(id, version_id, with_content=True)}
    record = shapes.version_record(
        _base(), ver, registry.bundle(id, version_id), registry.publisher_bundle(id, version_id), contents
    )
    return _json(record)


def update_tool_version(id: str, version_id: str) -> Response:  # noqa: A002
    target = _target(id, version_id)
    body = _body()
    ver, changed = _registry().update_version(_actor(), id, version_id, validation.version_edit(body))
    if changed:
        audit_change(
            "trs.version.update",
            target,
            details={
                "fields": changed,
                "meta_version": ver.meta_version,
                "values": {k: body[k] for k in changed},
            },
        )
    return _json(shapes.tool_version(_base(), ver))


def set_tool_version_verification(id: str, version_id: str) -> Response:  # noqa: A002
    target = _target(id, version_id)
    body = _body()
    ver, changed = _registry().set_verification(_actor(), id, version_id, validation.verification(body))
    if changed:
        audit_change(
            "trs.version.verification",
            target,
            details={
                "verified": ver.verified,
                "verified_source": list(ver.verified_source),
                "meta_version": ver.meta_version,
            },
        )
    return _json(shapes.tool_version(_base(), ver))


def find_image_pins(reference: str) -> Response:
    """The signed versions whose primary image is ``reference`` (newest first)."""
    set_target(reference[:200])
    registry = _registry()
    found = registry.find_image_pins(reference)
    return _json(
        {
            "reference": reference,
            "pins": [
                {
                    "tool_id": ver.tool_id,
                    "version_id": ver.version_id,
                    "image_name": ver.images[0].pinned_name,
                    "manifest_digest": ver.images[0].manifest_digest or None,
                    "config_digest": ver.images[0].config_digest,
                    "signed_digest": ver.signed_digest,
                    "digest_kind": ver.digest_kind,
                    "created_at": ver.created_at.isoformat(),
                }
                for ver in found
            ],
        }
    )


def get_tool_version_bundle(id: str, version_id: str) -> Response:  # noqa: A002
    _target(id, version_id)
    bundle = _registry().bundle(id, version_id)
    return Response(bundle, status=200, mimetype="application/vnd.dev.sigstore.bundle.v0.3+json")


def check_tool_version_images(id: str, version_id: str) -> Response:  # noqa: A002
    target = _target(id, version_id)
    if caller().username is None:  # it makes outbound registry requests: never for anonymous callers
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    report = _registry().check_image_current(id, version_id)
    for drift in report.drifted:
        security_event(
            "trs.image.drift",
            target=target,
            details={
                "reference": drift.reference,
                "expected": drift.pinned_digest,
                "actual": drift.current_digest,
            },
        )
    return _json(shapes.drift_report(report))


def get_signing_trust_material() -> Response:
    return _json(_registry().trust_material())


def rotate_signing_key() -> Response:
    key_id = _registry().rotate_key()
    set_target(key_id)
    audit_change("trs.signing.rotate", key_id, details={"active_key_id": key_id})
    return _json({"active_key_id": key_id})


def revoke_signing_key(key_id: str) -> Response:
    set_target(key_id)
    result = _registry().revoke_key(key_id)
    audit_change(
        "trs.signing.revoke",
        key_id,
        details={
            "active_key_id": result.active_key_id,
            "resigned": list(result.resigned),
            "unsigned": list(result.unsigned),
        },
    )
    if result.unsigned:
        security_event("trs.signing.resign_failed", target=key_id, details={"versions": list(result.unsigned)})
    return _json(
        {
            "revoked_key_id": result.revoked_key_id,
            "active_key_id": result.active_key_id,
            "resigned": list(result.resigned),
            "unsigned": list(result.unsigned),
        }
    )
