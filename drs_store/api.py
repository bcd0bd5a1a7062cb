"""Handlers of the DRS 1.5.0 API and its HelixGate write extension (openapi/drs.yaml).

Thin by design: parse, call ``DrsStore`` (drs_store.domain), audit, render the read model
with ``drs_store.shapes``.
Authentication and the operation's permission were checked by the guard in helixgate.web;
object-level rules (grants, public flags, ownership, delegation) live in the store.

Notes:

* POST operations may carry the caller's token as ``passports[0]`` in the body (PassportAuth,
  ``x-in: body``): the guard accepts it as the bearer token; handlers ignore ``passports``.
* ``POST /objects/access`` (bulk access URLs) and ``POST /objects/{object_id}`` share a path
  shape; object ids are 32 hex characters, so no object can be called ``access``.
* Uploads are read as a stream: connexion registers no body validator for
  ``application/octet-stream`` and a2wsgi hands the ASGI body to Flask chunk by chunk, so
  memory stays flat. A body without Content-Length (chunked) is read from ``wsgi.input``:
  werkzeug's ``request.stream`` returns an empty stream then (a2wsgi does not set
  ``wsgi.input_terminated``), while the ASGI server itself terminates the body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar, cast

from flask import Response, jsonify, request

from drs_store import shapes
from drs_store.access import ObjectHidden, Principal
from drs_store.domain import DrsStore, ObjectInfo, RangeNotSatisfiable, RequestInfo, parse_meta
from helixgate.body_pipe import pipe_from_environ
from helixgate.errors import BadRequest, IntegrityError
from helixgate.service_info import ServiceType, base_service_info
from helixgate.services import ga4gh_error
from helixgate.web import audit_change, caller, current, json_body, platform, security_event, set_target

T = TypeVar("T")


def _store() -> DrsStore:
    return platform().domain(DrsStore)


def _deployment() -> shapes.Deployment:
    s = platform().settings
    return shapes.Deployment(s.drs_host, s.s3_region, tuple(_store().bearer_issuers))


def _object(obj: ObjectInfo) -> dict[str, Any]:
    return shapes.drs_object(_deployment(), obj)


def _principal() -> Principal:
    c = caller()
    return Principal(c.effective_user, tuple(c.effective_roles), c.username)


def _checked(target: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn``; a refusal disguised as 404 (hide-existence) is still a security event."""
    try:
        return fn()
    except ObjectHidden as exc:
        security_event("drs.access.denied", target=target, severity=5, details={"reason": exc.message, "hidden": True})
        raise


def _record_denials(ids: list[str]) -> None:
    if ids:
        security_event("drs.access.denied", severity=5, details={"object_ids": ids[:100], "bulk": True})


def _bulk_ids(body: Any, key: str) -> list[str]:
    ids = body.get(key)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest(f"{key} must be an array of object ids")
    return ids


# ------------------------------------------------------------------------ DRS 1.5.0
DRS_TYPE = ServiceType("drs", "org.ga4gh", "drs", "1.5.0", "HelixGate data repository")


def get_service_info() -> dict[str, Any]:
    s = platform().settings
    info = base_service_info(DRS_TYPE, s.effective_public_url, s.drs_host)
    count, total = _store().stats()
    limit = int(s.drs_bulk_limit)
    info["maxBulkRequestLength"] = limit  # deprecated root field, still required by DrsService in 1.5.0
    info["drs"] = {"maxBulkRequestLength": limit, "objectCount": count, "totalObjectSize": total}
    info["x-helixgate"] = {"maxUploadBytes": int(s.max_upload_bytes), "checksumTypes": ["sha-256"]}
    return info


def options_object(object_id: str) -> dict[str, Any]:
    set_target(object_id)
    return shapes.authorizations(_deployment(), _store().authorizations(_principal(), object_id))


def get_object(object_id: str, expand: bool = False) -> dict[str, Any]:
    set_target(object_id)
    return _object(_checked(object_id, lambda: _store().get_object(_principal(), object_id, expand=bool(expand))))


def post_object(object_id: str) -> dict[str, Any]:
    set_target(object_id)
    expand = bool(json_body().get("expand", False))  # a boolean (the OpenAPI schema)
    return _object(_checked(object_id, lambda: _store().get_object(_principal(), object_id, expand=expand)))


def options_bulk_object() -> dict[str, Any]:
    ids = _bulk_ids(json_body(), "bulk_object_ids")
    dep = _deployment()
    result = _store().bulk_authorizations(_principal(), ids)
    return shapes.bulk(result, "resolved_drs_object", lambda auth: shapes.authorizations(dep, auth))


def get_bulk_objects(expand: bool = False) -> dict[str, Any]:
    ids = _bulk_ids(json_body(), "bulk_object_ids")
    result = _store().bulk_objects(_principal(), ids, expand=bool(expand))
    _record_denials(result.denied)
    return shapes.bulk(result, "resolved_drs_object", _object)


def get_access_url(object_id: str, access_id: str) -> dict[str, Any]:
    set_target(object_id)
    return shapes.access_url(_checked(object_id, lambda: _store().access_url(_principal(), object_id, access_id)))


def post_access_url(object_id: str, access_id: str) -> dict[str, Any]:
    set_target(object_id)
    json_body()  # the body only carries passports; malformed JSON is still a 400
    return shapes.access_url(_checked(object_id, lambda: _store().access_url(_principal(), object_id, access_id)))


def get_bulk_access_url() -> dict[str, Any]:
    entries = json_body().get("bulk_object_access_ids")
    if not isinstance(entries, list):
        raise BadRequest("bulk_object_access_ids must be an array of {bulk_object_id, bulk_access_ids}")
    pairs: list[tuple[str, list[str]]] = []
    for entry in entries:
        oid = entry.get("bulk_object_id") if isinstance(entry, dict) else None
        aids = entry.get("bulk_access_ids") if isinstance(entry, dict) else None
        if (
            not isinstance(oid, str)
            or not isinstance(aids, list)
            or not aids
            or not all(isinstance(a, str) for a in aids)
        ):
            raise BadRequest("each bulk_object_access_ids entry needs bulk_object_id and a non-empty bulk_access_ids")
        pairs.append((oid, aids))
    result = _store().bulk_access(_principal(), pairs)
    _record_denials(result.denied)
    return shapes.bulk(result, "resolved_drs_object_access_urls", shapes.bulk_access_url)


# ------------------------------------------------------------------------ write extension
def _request_stream() -> tuple[BinaryIO, int | None]:
    length = request.content_length
    pipe = pipe_from_environ(request.environ)
    if pipe is not None:  # batches assembled by the event loop (helixgate/body_pipe.py)
        return cast(BinaryIO, pipe), length
    if length is not None:
        return cast(BinaryIO, request.stream), length
    return cast(BinaryIO, request.environ["wsgi.input"]), None


def upload_object(
    name: str | None = None,
    dataset_id: str | None = None,
    mime_type: str | None = None,
    description: str | None = None,
    sha256: str | None = None,
    public: bool = False,
    provenance: str | None = None,
) -> tuple[dict[str, Any], int]:
    meta = parse_meta(
        name=name,
        description=description,
        mime_type=mime_type,
        dataset_id=dataset_id,
        public=public,
        sha256=sha256,
        provenance=provenance,
    )
    stream, length = _request_stream()
    try:
        obj = _store().upload(_principal(), stream, meta, content_length=length)
    except IntegrityError as exc:
        security_event(
            "drs.upload.checksum_mismatch",
            severity=6,
            details={"expected": exc.expected, "actual": exc.actual, "name": name},
        )
        raise
    set_target(obj.id)
    audit_change("drs.object.create", obj.id, details=_change_details(obj, meta.dataset_id))
    return _object(obj), 201


def register_object() -> tuple[dict[str, Any], int]:
    body = json_body()  # shaped by HelixGateRegistration (connexion); values checked by parse_meta
    url: str = body["url"]
    meta = parse_meta(
        name=body.get("name"),
        description=body.get("description"),
        mime_type=body.get("mime_type"),
        dataset_id=body.get("dataset_id"),
        public=body.get("public", False),
        sha256=body.get("sha256"),
        provenance=body.get("provenance"),
    )
    try:
        obj = _store().register_external(_principal(), url, meta)
    except IntegrityError as exc:
        security_event(
            "drs.register.checksum_mismatch", severity=6, details={"expected": exc.expected, "actual": exc.actual}
        )
        raise
    set_target(obj.id)
    details = _change_details(obj, meta.dataset_id)
    details["registered_in_place"] = True
    audit_change("drs.object.register", obj.id, details=details)
    return _object(obj), 201


def find_objects(checksum: str) -> dict[str, Any]:
    return {"objects": [_object(o) for o in _store().find_by_checksum(_principal(), checksum)]}


def delete_object(object_id: str) -> tuple[str, int]:
    set_target(object_id)
    summary = _checked(object_id, lambda: _store().delete_object(_principal(), object_id))
    audit_change("drs.object.delete", object_id, details=summary)
    return "", 204


def create_bundle() -> tuple[dict[str, Any], int]:
    body = json_body()  # shaped by HelixGateBundleRequest (connexion); names and members checked by the store
    members = [(item["name"], item["id"]) for item in body["contents"]]
    meta = parse_meta(
        name=body.get("name"),
        description=body.get("description"),
        dataset_id=body.get("dataset_id"),
        public=body.get("public", False),
    )
    obj = _store().create_bundle(_principal(), meta, members)
    set_target(obj.id)
    audit_change("drs.bundle.create", obj.id, details={"sha256": obj.sha256, "members": [m[1] for m in members][:100]})
    return _object(obj), 201


def create_dataset() -> tuple[dict[str, Any], int]:
    body = json_body()  # name: 1-255 characters, description, public (the OpenAPI schema)
    ds = _store().create_dataset(_principal(), body["name"], body.get("description") or "", body.get("public", False))
    set_target(ds.id)
    audit_change("drs.dataset.create", ds.id, details={"name": ds.name, "public": ds.public})
    return shapes.dataset(ds), 201


def list_datasets() -> dict[str, Any]:
    return {"datasets": [shapes.dataset(ds) for ds in _store().list_datasets(_principal())]}


def list_dataset_objects(dataset_id: str, page_size: int = 100, page_token: str = "") -> dict[str, Any]:
    set_target(dataset_id)
    page, token = _checked(
        dataset_id,
        lambda: _store().dataset_objects(_principal(), dataset_id, page_size=int(page_size), page_token=page_token),
    )
    return {"objects": [_object(o) for o in page], "next_page_token": token}


def get_dataset(dataset_id: str) -> dict[str, Any]:
    set_target(dataset_id)
    return shapes.dataset(_checked(dataset_id, lambda: _store().get_dataset(_principal(), dataset_id)))


def create_grant(dataset_id: str) -> tuple[dict[str, Any], int]:
    set_target(dataset_id)
    username: str = json_body()["username"]  # a string (the OpenAPI schema); the store refuses ""
    grant, created = _store().grant(_principal(), dataset_id, username)
    if created:
        audit_change("drs.grant.create", dataset_id, details={"username": grant.username, "permission": "read"})
    return shapes.grant(grant), 201 if created else 200


def list_grants(dataset_id: str, include_revoked: bool = False) -> dict[str, Any]:
    set_target(dataset_id)
    grants = _store().list_grants(_principal(), dataset_id, include_revoked=bool(include_revoked))
    return {"grants": [shapes.grant(g) for g in grants]}


def revoke_grant(dataset_id: str, username: str) -> tuple[str, int]:
    set_target(dataset_id)
    _store().revoke(_principal(), dataset_id, username)
    audit_change("drs.grant.revoke", dataset_id, details={"username": username})
    return "", 204


def stream_object(object_id: str, exp: str = "", sig: str = "", u: str | None = None) -> Response:
    """The https access method: the signature is the credential (permission ``public``)."""
    set_target(object_id)
    st = current()
    info = RequestInfo(request_id=st.request_id, client_addr=st.client_addr, actor=u)
    range_header = request.headers.get("Range")
    try:
        plan = _store().open_stream(object_id, user=u, expires=exp, signature=sig, range_header=range_header, info=info)
    except RangeNotSatisfiable as exc:
        resp = jsonify(ga4gh_error(416, exc.message))
        resp.status_code = 416
        resp.headers["Content-Range"] = f"bytes */{exc.size}"
        return resp
    platform().audit.record(
        category="request",
        action="drs.object.read",
        outcome="success",
        actor=u,
        service="drs",
        target=object_id,
        request_id=st.request_id,
        client_addr=st.client_addr,
        details={"status": plan.status, "range": (range_header or "")[:100], "via": "signed-url"},
    )
    return Response(plan.body, status=plan.status, headers=plan.headers, direct_passthrough=True)


# ------------------------------------------------------------------------ helpers
def _change_details(obj: ObjectInfo, dataset_id: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"sha256": obj.sha256, "size": obj.size, "dataset_id": dataset_id}
    prov = obj.provenance
    if prov:
        details["provenance"] = {k: prov[k] for k in ("run_id", "task_id", "image_digest") if k in prov}
    return details
