"""Validation of a WES ``POST /runs`` request: form fields, attachments, inputs.

Pure functions over already-parsed multipart data, so they are testable without HTTP.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from helixgate.errors import BadRequest, PayloadTooLarge
from helixgate.integrity import sha256_bytes
from helixgate.limits import loads as safe_json_loads
from helixgate.paths import check_relative_path
from helixgate.uris import DrsRef, parse_drs, require_clean, scheme_of
from helixgate.wdl_documents import check_inputs, load_wdl, wdl_version
from wes_server.runs import Attachment

# workflow_type -> the versions WES runs, spelled as each language's community spells them
WORKFLOW_TYPES = {"CWL": ("v1.0", "v1.1", "v1.2"), "WDL": ("1.0", "1.1")}
# workflow_type -> the engine that evaluates it (as a library, inside the engine sandbox)
ENGINES = {"CWL": "cwltool", "WDL": "miniwdl"}
ENGINE = ENGINES["CWL"]


def engine_versions() -> dict[str, str]:
    """engine name -> the installed distribution's real version (what service-info reports)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for engine in ENGINES.values():
        try:
            out[engine] = version(engine)
        except PackageNotFoundError:  # not installed: not offered
            continue
    return out


def canonical_version(workflow_type: str, version: str) -> str:
    """``1.0``/``v1.0`` in the spelling of WORKFLOW_TYPES[workflow_type] (``v1.0`` for CWL,
    ``1.0`` for WDL); BadRequest naming the supported versions otherwise."""
    bare = version[1:] if version[:1] in ("v", "V") else version
    for known in WORKFLOW_TYPES[workflow_type]:
        if bare == known.lstrip("v"):
            return known
    raise BadRequest(
        f"unsupported workflow_type_version {version or '(missing)'!r} for {workflow_type}; "
        f"supported: {', '.join(WORKFLOW_TYPES[workflow_type])}"
    )
MAX_ATTACHMENTS = 200
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._+@=-][A-Za-z0-9._+@=, -]*$")


@dataclass
class RunRequest:
    workflow_type: str
    workflow_type_version: str
    workflow_url: str
    workflow_params: dict[str, Any]
    tags: dict[str, str]
    workflow_engine: str
    workflow_engine_version: str
    workflow_engine_parameters: dict[str, str]
    attachments: list[Attachment] = field(default_factory=list)

    def to_spec(self) -> dict[str, Any]:
        """The RunRequest object as WES returns it in the run log."""
        out: dict[str, Any] = {
            "workflow_params": self.workflow_params,
            "workflow_type": self.workflow_type,
            "workflow_type_version": self.workflow_type_version,
            "tags": self.tags,
            "workflow_url": self.workflow_url,
            "workflow_engine": self.workflow_engine,
            "workflow_engine_parameters": self.workflow_engine_parameters,
        }
        if self.workflow_engine_version:
            out["workflow_engine_version"] = self.workflow_engine_version
        return out


def _json_object(name: str, raw: str | None, *, required: bool = False) -> dict[str, Any]:
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"{name} is required")
        return {}
    value = safe_json_loads(raw, name)  # depth, valid strings, 64-bit integers
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be a JSON object")
    return value


def safe_attachment_path(name: str) -> str:
    """A relative POSIX path with no traversal; raise BadRequest otherwise: the platform's one
    path rule (``helixgate.paths``) plus a conservative character set for uploaded names."""
    check_relative_path(name, "attachment file name")
    if not name or "\x00" in name or "\\" in name or len(name) > 512:
        raise BadRequest(f"invalid attachment file name {name[:80]!r}")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BadRequest(f"attachment file name must be relative: {name[:80]!r}")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRequest(f"attachment file name must not contain empty, '.' or '..' segments: {name[:80]!r}")
    if not all(_SAFE_SEGMENT.match(p) for p in parts):
        raise BadRequest(f"attachment file name has unsupported characters: {name[:80]!r}")
    return posixpath.normpath(name)


def parse_run_request(
    form: Mapping[str, str],
    files: list[tuple[str, bytes]],
    *,
    max_attachment_bytes: int,
) -> RunRequest:
    wtype = (form.get("workflow_type") or "").strip()
    if not wtype:
        raise BadRequest("workflow_type is required")
    canonical = wtype.upper()
    if canonical not in WORKFLOW_TYPES:
        raise BadRequest(f"unsupported workflow_type {wtype!r}; supported: {', '.join(WORKFLOW_TYPES)}")
    version = canonical_version(canonical, (form.get("workflow_type_version") or "").strip())
    url = (form.get("workflow_url") or "").strip()
    if not url:
        raise BadRequest("workflow_url is required")
    expected_engine = ENGINES[canonical]
    engine = (form.get("workflow_engine") or expected_engine).strip()
    if engine.lower() != expected_engine:
        raise BadRequest(f"unsupported workflow_engine {engine!r} for {canonical}; supported: {expected_engine}")
    params = _json_object("workflow_params", form.get("workflow_params"))
    tags_raw = _json_object("tags", form.get("tags"))
    tags = {str(k)[:128]: str(v)[:512] for k, v in tags_raw.items()}
    engine_params = _json_object("workflow_engine_parameters", form.get("workflow_engine_parameters"))
    if engine_params:
        raise BadRequest(
            f"workflow_engine_parameters not supported: {', '.join(sorted(engine_params))[:200]} "
            "(the executor's security settings are not client-tunable)"
        )
    if len(files) > MAX_ATTACHMENTS:
        raise BadRequest(f"too many attachments (maximum {MAX_ATTACHMENTS})")
    total = 0
    attachments: dict[str, Attachment] = {}
    for name, content in files:
        path = safe_attachment_path(name)
        total += len(content)
        if total > max_attachment_bytes:
            raise PayloadTooLarge(f"workflow attachments exceed {max_attachment_bytes} bytes")
        if path in attachments:
            raise BadRequest(f"duplicate attachment {path}")
        attachments[path] = Attachment(path, content, sha256_bytes(content))
    return RunRequest(
        workflow_type=canonical,
        workflow_type_version=version,
        workflow_url=url,
        workflow_params=canonical_drs(params),
        tags=tags,
        workflow_engine=expected_engine,
        workflow_engine_version=(form.get("workflow_engine_version") or "").strip(),
        workflow_engine_parameters={},
        attachments=list(attachments.values()),
    )


def iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_strings(v)


def drs_inputs(params: Mapping[str, Any]) -> list[DrsRef]:
    """Every drs reference in the inputs, however its scheme is spelled, in order of appearance."""
    seen: dict[str, DrsRef] = {}
    for s in iter_strings(params):
        ref = parse_drs(s)
        if ref is not None:
            seen.setdefault(ref.uri, ref)
    return list(seen.values())


def canonical_drs(value: Any) -> Any:
    """A copy of ``value`` with every drs reference in its canonical spelling (``drs://host/id``),
    so the run stores exactly the references the submission check read."""
    if isinstance(value, str):
        ref = parse_drs(value)
        return ref.uri if ref is not None else value
    if isinstance(value, dict):
        return {k: canonical_drs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical_drs(v) for v in value]
    return value


def refuse_local_inputs(params: Mapping[str, Any], attachment_paths: set[str]) -> None:
    """Inputs must be DRS objects or attached files: the server cannot read a client's disk."""
    bad = []
    for s in iter_strings(params):
        scheme = (scheme_of(s) or "") if "://" in s else ""
        if scheme:
            require_clean(s, "input URI")
        if scheme == "file":
            path = urlsplit(s).path.lstrip("/")
            if path not in attachment_paths and posixpath.basename(path) not in attachment_paths:
                bad.append(s)
        elif scheme not in ("", "drs"):
            bad.append(s)  # no checksum to verify against: register it in DRS first
    if bad:
        raise BadRequest(
            "inputs must be drs:// objects or attached files; not accessible to the server: "
            + ", ".join(b[:120] for b in bad[:10])
        )


def check_wdl_run(req: RunRequest, main: str) -> None:
    """A WDL submission: the document and its imports load from the run's own files only (no
    URL, host path or ``..``), declare the version the request names, and the inputs fit the
    workflow's declared inputs with every File a drs:// object or an attached file. BadRequest
    (``WdlDocumentError``) naming the problem otherwise."""
    files = {a.path: a.content for a in req.attachments}
    doc = load_wdl(files, main)
    declared = wdl_version(doc)
    if declared != req.workflow_type_version:
        raise BadRequest(
            f"workflow_type_version is {req.workflow_type_version} but {main} declares version {declared}"
        )
    check_inputs(doc, req.workflow_params, attachments=set(files))
