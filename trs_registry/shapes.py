"""TRS 2.0.1 JSON shapes (and the HelixGate extension records) built from the domain's read models."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from trs_registry.domain import DriftReport, FileContent, FileInfo, ImageInfo, ToolInfo, VersionInfo
from trs_registry.validation import TOOL_CLASSES

CHECKSUM_TYPE = "sha256"


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def q(value: str) -> str:
    return quote(value, safe="")


def tool_url(base: str, tool_id: str) -> str:
    return f"{base}/tools/{q(tool_id)}"


def version_url(base: str, tool_id: str, version_id: str) -> str:
    return f"{tool_url(base, tool_id)}/versions/{q(version_id)}"


def tool_class(class_id: str) -> dict[str, str]:
    return {"id": class_id, "name": class_id, "description": TOOL_CLASSES.get(class_id, "")}


def tool_classes() -> list[dict[str, str]]:
    return [tool_class(c) for c in TOOL_CLASSES]


def checksum(hex_: str) -> dict[str, str]:
    return {"checksum": hex_, "type": CHECKSUM_TYPE}


def image_data(img: ImageInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "image_name": img.pinned_name,
        "image_type": "Docker",
        "checksum": [checksum(img.pinned_digest.removeprefix("sha256:"))],
        "updated": iso(img.resolved_at),
    }
    if img.registry_host:
        out["registry_host"] = img.registry_host
    if img.size is not None:
        out["size"] = img.size
    return out


def tool_version(base: str, ver: VersionInfo) -> dict[str, Any]:
    return {
        "id": ver.version_id,
        "url": version_url(base, ver.tool_id, ver.version_id),
        "name": ver.name or ver.version_id,
        "author": list(ver.authors),
        "is_production": ver.is_production,
        "images": [image_data(i) for i in ver.images],
        "descriptor_type": ver.descriptor_types,
        "descriptor_type_version": {k: list(vals) for k, vals in ver.descriptor_type_versions.items()},
        "containerfile": ver.has_containerfile,
        "meta_version": str(ver.meta_version),
        "verified": ver.verified,
        "verified_source": list(ver.verified_source),
        "signed": ver.signed,
        "included_apps": list(ver.included_apps),
    }


def tool(base: str, info: ToolInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": info.id,
        "url": tool_url(base, info.id),
        "aliases": list(info.aliases),
        "organization": info.organization,
        "name": info.name,
        "toolclass": tool_class(info.toolclass),
        "description": info.description,
        "meta_version": str(info.meta_version),
        "has_checker": info.has_checker,
        "versions": [tool_version(base, ver) for ver in info.versions],
    }
    if info.checker_url:
        out["checker_url"] = info.checker_url
    return out


def file_url(base: str, tool_id: str, version_id: str, f: FileInfo) -> str | None:
    if not f.descriptor_type:
        return None
    return f"{version_url(base, tool_id, version_id)}/PLAIN_{f.descriptor_type}/descriptor/{quote(f.path, safe='/')}"


def file_wrapper(base: str, tool_id: str, version_id: str, fc: FileContent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "content": fc.content.decode("utf-8", "replace"),
        "checksum": [checksum(fc.info.sha256)],
        "image_type": "Docker" if fc.info.file_type == "CONTAINERFILE" else fc.info.descriptor_type,
    }
    if out["image_type"] is None:
        del out["image_type"]
    url = file_url(base, tool_id, version_id, fc.info)
    if url:
        out["url"] = url
    return out


def tool_file(f: FileInfo) -> dict[str, Any]:
    return {"path": f.path, "file_type": f.file_type, "checksum": checksum(f.sha256)}


# ---------------------------------------------------------------- extension records
def tool_record(base: str, info: ToolInfo) -> dict[str, Any]:
    """The Tool plus HelixGate fields (owner, publisher policy, audit times)."""
    out = tool(base, info)
    out["x_helixgate"] = {
        "owner": info.owner,
        "required_publisher_identities": [dict(p) for p in info.required_publisher_identities],
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "updated_by": info.updated_by,
    }
    return out


def image_record(img: ImageInfo) -> dict[str, Any]:
    return {
        "position": img.position,
        "primary": img.position == 0,
        "reference": img.reference,
        "source": img.source,
        "registry_host": img.registry_host,
        "repository": img.repository,
        "tag": img.tag,
        "image_name": img.pinned_name,
        "manifest_digest": img.manifest_digest or None,
        "config_digest": img.config_digest,
        "media_type": img.media_type or None,
        "size": img.size,
        "resolved_at": iso(img.resolved_at),
    }


def version_record(
    base: str, ver: VersionInfo, bundle: str, publisher_bundle: str, contents: dict[str, bytes] | None = None
) -> dict[str, Any]:
    """Everything a verifier (WES) needs for one version, in one document."""
    files = []
    for f in ver.files:
        entry: dict[str, Any] = {
            "path": f.path,
            "file_type": f.file_type,
            "descriptor_type": f.descriptor_type,
            "size": f.size,
            "checksum": checksum(f.sha256),
            "url": file_url(base, ver.tool_id, ver.version_id, f),
        }
        if contents is not None:
            entry["content"] = contents[f.path].decode("utf-8", "replace")
        files.append(entry)
    primary = ver.images[0] if ver.images else None
    return {
        "tool_id": ver.tool_id,
        "version_id": ver.version_id,
        "url": version_url(base, ver.tool_id, ver.version_id),
        "publisher": ver.publisher,
        "created_at": iso(ver.created_at),
        "updated_at": iso(ver.updated_at),
        "updated_by": ver.updated_by,
        "meta_version": str(ver.meta_version),
        "descriptor_type": ver.descriptor_types,
        "files": files,
        "images": [image_record(i) for i in ver.images],
        "signature": {
            "signed": ver.signed,
            "signer_kind": ver.signer_kind,
            "signer": ver.signer,
            "subject_name": None if primary is None else image_subject(primary),
            "subject_digest": ver.signed_digest,
            "digest_kind": ver.digest_kind,
            "signed_at": iso(ver.signed_at),
            "bundle": json.loads(bundle) if bundle else None,
        },
        "publisher_signature": (
            {"signer": ver.publisher_signer, "bundle": json.loads(publisher_bundle)} if publisher_bundle else None
        ),
    }


def image_subject(img: ImageInfo) -> str:
    if img.source == "registry":
        return f"{img.registry_host}/{img.repository}"
    return img.repository or img.config_digest


def drift_report(report: DriftReport) -> dict[str, Any]:
    return {
        "tool_id": report.tool_id,
        "version_id": report.version_id,
        "checked_at": iso(report.checked_at),
        "current": report.current,
        "images": [
            {
                "reference": i.reference,
                "pinned_digest": i.pinned_digest,
                "current_digest": i.current_digest,
                "status": i.status,
                "message": i.message,
            }
            for i in report.images
        ],
    }
