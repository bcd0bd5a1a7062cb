"""DRS 1.5.0 JSON shapes (and the HelixGate extension records) built from the store's read models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from drs_store.domain import (
    ACCESS_HTTPS,
    ACCESS_S3,
    AccessUrl,
    Authorizations,
    BulkResult,
    DatasetInfo,
    GrantInfo,
    Member,
    ObjectInfo,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Deployment:
    """What the shapes need to know about this deployment."""

    drs_host: str
    s3_region: str
    bearer_issuers: tuple[str, ...]

    def uri(self, object_id: str) -> str:
        return drs_uri(self.drs_host, object_id)


def drs_uri(drs_host: str, object_id: str) -> str:
    return f"drs://{drs_host}/{object_id}"


def rfc3339(value: datetime) -> str:
    return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def authorizations(dep: Deployment, auth: Authorizations) -> dict[str, Any]:
    types = (["None"] if auth.public else []) + ["BearerAuth", "PassportAuth"]
    return {
        "drs_object_id": auth.object_id,
        "supported_types": types,
        "bearer_auth_issuers": list(dep.bearer_issuers),
        "passport_auth_issuers": list(dep.bearer_issuers),
    }


def drs_object(dep: Deployment, obj: ObjectInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": obj.id,
        "self_uri": dep.uri(obj.id),
        "size": obj.size,
        "created_time": rfc3339(obj.created_at),
        "updated_time": rfc3339(obj.updated_at),
        "version": obj.sha256[:16],
        "checksums": [{"checksum": obj.sha256, "type": "sha-256"}],
    }
    if obj.name:
        out["name"] = obj.name
    if obj.mime_type:
        out["mime_type"] = obj.mime_type
    if obj.description:
        out["description"] = obj.description
    if obj.kind == "blob":
        available = obj.quarantined_at is None
        auth = authorizations(dep, Authorizations(obj.id, obj.public))
        methods: list[dict[str, Any]] = [
            {"type": "https", "access_id": ACCESS_HTTPS, "available": available, "authorizations": auth}
        ]
        if obj.backend == "s3":
            methods.append(
                {
                    "type": "s3",
                    "access_id": ACCESS_S3,
                    "cloud": "aws",
                    "region": dep.s3_region,
                    "available": available,
                    "authorizations": auth,
                }
            )
        out["access_methods"] = methods
    else:
        out["contents"] = contents(dep, obj.contents or ())
    if obj.provenance:
        out["provenance"] = obj.provenance  # HelixGate extension (DrsObject allows extra properties)
    if obj.quarantined_at is not None:
        out["x-helixgate-quarantined"] = True
    return out


def contents(dep: Deployment, members: Sequence[Member]) -> list[dict[str, Any]]:
    out = []
    for m in members:
        entry: dict[str, Any] = {"name": m.name, "id": m.id, "drs_uri": [dep.uri(m.id)]}
        if m.contents is not None:
            entry["contents"] = contents(dep, m.contents)
        out.append(entry)
    return out


def access_url(url: AccessUrl) -> dict[str, Any]:
    return {"url": url.url}


def bulk_access_url(url: AccessUrl) -> dict[str, Any]:
    return {"drs_object_id": url.object_id, "drs_access_id": url.access_id, "url": url.url}


def bulk(result: BulkResult[T], key: str, render: Callable[[T], Mapping[str, Any]]) -> dict[str, Any]:
    unresolved = sum(len(v) for v in result.failed.values())
    return {
        "summary": {"requested": result.requested, "resolved": len(result.resolved), "unresolved": unresolved},
        "unresolved_drs_objects": [
            {"error_code": code, "object_ids": ids} for code, ids in sorted(result.failed.items())
        ],
        key: [dict(render(item)) for item in result.resolved],
    }


def dataset(ds: DatasetInfo) -> dict[str, Any]:
    return {
        "id": ds.id,
        "name": ds.name,
        "description": ds.description,
        "public": ds.public,
        "created_by": ds.created_by,
        "created_time": rfc3339(ds.created_at),
        "object_count": ds.object_count,
    }


def grant(g: GrantInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "dataset_id": g.dataset_id,
        "username": g.username,
        "permission": "read",
        "granted_by": g.granted_by,
        "granted_time": rfc3339(g.granted_at),
    }
    if g.revoked_at is not None:
        out["revoked_by"] = g.revoked_by
        out["revoked_time"] = rfc3339(g.revoked_at)
    return out
