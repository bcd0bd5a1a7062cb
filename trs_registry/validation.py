"""Request validation of the tool registry, in one place: request bodies become typed inputs.

Who checks what:

* connexion checks every request against the OpenAPI document (openapi/trs.yaml, built from
  openapi/extensions/trs.yaml): JSON types, required properties, enums. Nothing here repeats
  those checks.
* this module checks what the document cannot express -- tool id and semantic-version
  grammars, file paths, sizes and counts, duplicates, control characters, CWL documents, WDL
  documents (parsed and type-checked by miniwdl, imports only among the version's own files,
  WDL 1.0/1.1: ``helixgate.wdl_documents``),
  publisher identities, image lists, unknown or immutable fields -- and turns a body into the
  typed input the domain takes (``NewTool``, ``ToolEdit``, ``PublishSpec``, ``VersionEdit``,
  ``Verification``). ``TrsRegistry`` never sees a raw body.

Everything here is pure (no database, no network) and raises client-safe errors:
``BadRequest`` for malformed input, ``PayloadTooLarge`` for size limits.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from helixgate.errors import BadRequest, PayloadTooLarge
from helixgate.integrity import sha256_bytes
from helixgate.paths import check_relative_path
from helixgate.wdl_documents import WdlDocumentError, load_wdl, wdl_version

# Tool ids never contain '/': %2F never routes (ARCHITECTURE.md section 6).
TOOL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?\Z")
# https://semver.org/spec/v2.0.0.html, the official regular expression
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
FILE_TYPES = ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR", "TEST_FILE", "CONTAINERFILE", "OTHER")
DESCRIPTOR_FILE_TYPES = frozenset({"PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR", "TEST_FILE"})
DESCRIPTOR_TYPES = ("CWL", "WDL")  # stored, checksummed, signed and served; WES runs both
ALL_DESCRIPTOR_TYPES = ("CWL", "WDL", "NFL", "GALAXY", "SMK")  # the TRS enum
TOOL_CLASSES: dict[str, str] = {
    "CommandLineTool": "A single command-line tool running in one container",
    "Workflow": "A workflow of tools, each step running in its own container",
}

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_VERSION_BYTES = 16 * 1024 * 1024
MAX_REQUEST_BYTES = 24 * 1024 * 1024  # files travel as JSON strings: allow for escaping
MAX_FILES = 500
MAX_IMAGES = 32
MAX_PATH_LENGTH = 512
MAX_LIST = 50
MAX_TEXT = 256
MAX_DESCRIPTION = 8192

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CWL_VERSION = re.compile(r"""^\s*["']?cwlVersion["']?\s*:\s*["']?([A-Za-z0-9._-]+)""", re.MULTILINE)


# ---------------------------------------------------------------- scalar checks
def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key implementing semver precedence (pre-releases before the release, build metadata ignored)."""
    m = SEMVER.match(version)
    if not m:
        return (-1, -1, -1, -1, (), version)  # stored versions always match; keep the order total anyway
    pre = m.group(4)
    # numeric identifiers sort numerically and before alphanumeric ones; a shorter prefix sorts first
    ids = () if pre is None else tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids, version)


def check_version_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("version id is required (a semantic version such as 1.0.0)")
    if len(value) > 128 or not SEMVER.match(value):
        raise BadRequest(f"version id {value[:80]!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
    return value


def check_tool_id(value: Any) -> str:
    if not isinstance(value, str) or not TOOL_ID.match(value):
        raise BadRequest(
            f"tool id {str(value)[:80]!r} is invalid: use 1-128 lower-case letters, digits, '.', '_' or '-' "
            "(no '/'), starting and ending with a letter or digit, e.g. org.example.bwa"
        )
    return value


def slug(text: str) -> str:
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", norm).strip("-")


def derive_tool_id(organization: str, name: str) -> str:
    """``<organization>.<name>`` as a slug, e.g. ("Example Lab", "BWA mem") -> "example-lab.bwa-mem"."""
    candidate = ".".join(p for p in (slug(organization), slug(name)) if p)[:128].strip(".-_")
    return check_tool_id(candidate)


def text(value: Any, what: str, *, limit: int = MAX_TEXT, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadRequest(f"{what} must be a {'non-empty ' if required else ''}string")
    if len(value) > limit:
        raise BadRequest(f"{what} is longer than {limit} characters")
    if what != "description" and _CONTROL.search(value):
        raise BadRequest(f"{what} must not contain control characters")
    return value


def text_list(value: Any, what: str, *, limit: int = MAX_TEXT) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise BadRequest(f"{what} must be a list of at most {MAX_LIST} strings")
    out = [text(v, f"{what} entry", limit=limit, required=True) for v in value]
    if len(set(out)) != len(out):
        raise BadRequest(f"{what} contains duplicates")
    return out


def check_path(path: Any) -> str:
    """A file path inside a tool version: the platform's one path rule (``helixgate.paths``)."""
    return check_relative_path(path)


# ---------------------------------------------------------------- tool requests
@dataclass(frozen=True)
class PublisherIdentity:
    identity: str
    issuer: str

    def to_dict(self) -> dict[str, str]:
        return {"identity": self.identity, "issuer": self.issuer}


def publisher_identities(value: Any) -> list[PublisherIdentity]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 20:
        raise BadRequest("required_publisher_identities must be a list of at most 20 {identity, issuer} objects")
    out: list[PublisherIdentity] = []
    for entry in value:  # objects with string identity and issuer (the OpenAPI schema)
        identity = text(entry.get("identity"), "publisher identity", limit=512, required=True)
        issuer = text(entry.get("issuer"), "publisher identity issuer", limit=512, required=True)
        if not issuer.startswith(("https://", "http://")):
            raise BadRequest(f"publisher identity issuer {issuer[:80]!r} must be an OIDC issuer URL")
        out.append(PublisherIdentity(identity, issuer))
    return out


def tool_class(value: Any) -> str:
    if value is None:
        return "CommandLineTool"
    if isinstance(value, dict):
        value = value.get("id") or value.get("name")
    if not isinstance(value, str) or value not in TOOL_CLASSES:
        raise BadRequest(f"toolclass {str(value)[:80]!r} is not one of {', '.join(TOOL_CLASSES)}")
    return str(value)


TOOL_FIELDS = frozenset(
    {
        "organization",
        "name",
        "description",
        "toolclass",
        "aliases",
        "has_checker",
        "checker_url",
        "required_publisher_identities",
    }
)


@dataclass(frozen=True)
class NewTool:
    id: str
    organization: str
    name: str
    toolclass: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    has_checker: bool = False
    checker_url: str = ""
    required_publisher_identities: tuple[PublisherIdentity, ...] = ()


@dataclass(frozen=True)
class ToolEdit:
    """The tool fields a PATCH names, validated; a field left out stays as it is."""

    organization: str | None = None
    name: str | None = None
    description: str | None = None
    toolclass: str | None = None
    aliases: tuple[str, ...] | None = None
    has_checker: bool | None = None
    checker_url: str | None = None
    required_publisher_identities: tuple[PublisherIdentity, ...] | None = None

    def fields(self) -> dict[str, Any]:
        """The named fields as column values (publisher identities as stored: objects)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # declaration order: the order changes are reported in
            name, value = f.name, getattr(self, f.name)
            if value is None:
                continue
            if name == "required_publisher_identities":
                value = [p.to_dict() for p in value]
            elif name == "aliases":
                value = list(value)
            out[name] = value
        return out


def _refuse_unknown_tool_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        hint = " (the id of a tool never changes)" if "id" in unknown else ""
        raise BadRequest(f"unknown or read-only tool field(s): {', '.join(unknown)}{hint}")


def new_tool(body: Mapping[str, Any]) -> NewTool:
    """A create (POST) body as a typed new tool; the id defaults to ``<organization>.<name>``."""
    _refuse_unknown_tool_fields(body, TOOL_FIELDS | {"id"})
    organization = text(body.get("organization"), "organization", required=True)
    name = text(body.get("name"), "name", required=True)
    return NewTool(
        id=check_tool_id(body["id"]) if body.get("id") is not None else derive_tool_id(organization, name),
        organization=organization,
        name=name,
        toolclass=tool_class(body.get("toolclass")),
        description=text(body.get("description"), "description", limit=MAX_DESCRIPTION),
        aliases=tuple(text_list(body.get("aliases"), "aliases")),
        has_checker=bool(body.get("has_checker", False)),
        checker_url=text(body.get("checker_url"), "checker_url", limit=2048),
        required_publisher_identities=tuple(publisher_identities(body.get("required_publisher_identities"))),
    )


def tool_edit(body: Mapping[str, Any]) -> ToolEdit:
    """An edit (PATCH) body as the typed set of fields it changes."""
    _refuse_unknown_tool_fields(body, TOOL_FIELDS)
    return ToolEdit(
        organization=text(body["organization"], "organization", required=True) if "organization" in body else None,
        name=text(body["name"], "name", required=True) if "name" in body else None,
        description=text(body["description"], "description", limit=MAX_DESCRIPTION) if "description" in body else None,
        toolclass=tool_class(body["toolclass"]) if "toolclass" in body else None,
        aliases=tuple(text_list(body["aliases"], "aliases")) if "aliases" in body else None,
        has_checker=bool(body["has_checker"]) if "has_checker" in body else None,
        checker_url=text(body["checker_url"], "checker_url", limit=2048) if "checker_url" in body else None,
        required_publisher_identities=(
            tuple(publisher_identities(body["required_publisher_identities"]))
            if "required_publisher_identities" in body
            else None
        ),
    )


VERSION_EDIT_FIELDS = frozenset({"name", "author", "included_apps"})


@dataclass(frozen=True)
class VersionEdit:
    """The editable metadata of a published version that a PATCH names (None: unchanged)."""

    name: str | None = None
    author: tuple[str, ...] | None = None
    included_apps: tuple[str, ...] | None = None


def version_edit(body: Mapping[str, Any]) -> VersionEdit:
    unknown = sorted(set(body) - VERSION_EDIT_FIELDS)
    if unknown:
        raise BadRequest(
            f"field(s) {', '.join(unknown)} cannot be edited: a published version is immutable "
            f"(editable: {', '.join(sorted(VERSION_EDIT_FIELDS))})"
        )
    return VersionEdit(
        name=text(body["name"], "name") if "name" in body else None,
        author=tuple(text_list(body["author"], "author")) if "author" in body else None,
        included_apps=(
            tuple(text_list(body["included_apps"], "included_apps", limit=2048)) if "included_apps" in body else None
        ),
    )


@dataclass(frozen=True)
class Verification:
    verified: bool
    sources: tuple[str, ...]


def verification(body: Mapping[str, Any]) -> Verification:
    """An administrator's verification record: a verified version names who verified it."""
    sources = tuple(text_list(body.get("verified_source"), "verified_source", limit=2048))
    verified = bool(body["verified"])  # required boolean (the OpenAPI schema)
    if verified and not sources:
        raise BadRequest("verified_source must name who verified the version (an email or URL)")
    return Verification(verified, sources)


# ---------------------------------------------------------------- publish requests
@dataclass(frozen=True)
class FileSpec:
    path: str
    file_type: str
    descriptor_type: str | None
    content: bytes
    sha256: str

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class ImageSpec:
    reference: str
    digest: str | None


@dataclass(frozen=True)
class PublishSpec:
    version_id: str
    name: str
    authors: list[str]
    included_apps: list[str]
    files: list[FileSpec]
    images: list[ImageSpec]
    publisher_bundle: str | None
    descriptor_type_versions: dict[str, list[str]]


PUBLISH_FIELDS = frozenset(
    {"id", "version_id", "name", "author", "included_apps", "descriptor_type", "files", "images", "publisher_bundle"}
)


def publish_spec(body: Mapping[str, Any]) -> PublishSpec:
    unknown = sorted(set(body) - PUBLISH_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) in publish request: {', '.join(unknown)}")
    version_id = check_version_id(body.get("id", body.get("version_id")))
    default_type = body.get("descriptor_type", "CWL")  # one of DESCRIPTOR_TYPES (the OpenAPI enum)
    files = _files(body["files"], default_type)
    wdl_versions = _check_wdl(files)  # before anything is stored or signed
    images = _images(body.get("images"))
    bundle = body.get("publisher_bundle")
    if bundle is not None:
        if isinstance(bundle, dict):
            import json

            bundle = json.dumps(bundle)
        if not isinstance(bundle, str) or not bundle.strip():
            raise BadRequest("publisher_bundle must be a Sigstore bundle (JSON object or JSON text)")
        if len(bundle) > 4 * 1024 * 1024:
            raise PayloadTooLarge("publisher_bundle is larger than 4 MiB")
    return PublishSpec(
        version_id=version_id,
        name=text(body.get("name"), "name"),
        authors=text_list(body.get("author"), "author"),
        included_apps=text_list(body.get("included_apps"), "included_apps", limit=2048),
        files=files,
        images=images,
        publisher_bundle=bundle,
        descriptor_type_versions=_language_versions(files, wdl_versions),
    )


def _files(value: list[dict[str, Any]], default_type: str) -> list[FileSpec]:
    """Files as the OpenAPI schema shapes them: objects with string path and content, file_type
    and descriptor_type from their enums. Checked here: paths, sizes, counts, descriptors."""
    if not value:
        raise BadRequest("files must be a non-empty list of {path, content, file_type}")
    if len(value) > MAX_FILES:
        raise PayloadTooLarge(f"a tool version may hold at most {MAX_FILES} files, got {len(value)}")
    out: list[FileSpec] = []
    seen: set[str] = set()
    total = 0
    for entry in value:
        unknown = sorted(set(entry) - {"path", "content", "file_type", "descriptor_type"})
        if unknown:
            raise BadRequest(f"unknown file field(s): {', '.join(unknown)}")
        path = check_path(entry.get("path"))
        if path in seen:
            raise BadRequest(f"file path {path!r} appears twice")
        seen.add(path)
        file_type = entry["file_type"]
        content: str = entry["content"]
        data = content.encode("utf-8", "surrogatepass") if content else b""
        if len(data) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"file {path!r} is {len(data)} bytes; the limit is {MAX_FILE_BYTES} bytes")
        total += len(data)
        if total > MAX_VERSION_BYTES:
            raise PayloadTooLarge(f"the files of a tool version may total at most {MAX_VERSION_BYTES} bytes")
        dtype: str | None = None
        if file_type in DESCRIPTOR_FILE_TYPES:
            dtype = entry.get("descriptor_type", default_type)
        elif entry.get("descriptor_type") is not None:
            raise BadRequest(f"file {path!r}: a {file_type} file has no descriptor_type")
        out.append(FileSpec(path, file_type, dtype, data, sha256_bytes(data)))
    primaries: dict[str, list[str]] = {}
    for f in out:
        if f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type:
            primaries.setdefault(f.descriptor_type, []).append(f.path)
    if not primaries:
        raise BadRequest("a tool version needs a PRIMARY_DESCRIPTOR file")
    for dtype, paths in primaries.items():
        if len(paths) > 1:
            raise BadRequest(f"a tool version has one {dtype} PRIMARY_DESCRIPTOR, got {len(paths)}: {', '.join(paths)}")
    for f in out:
        if f.descriptor_type and f.descriptor_type not in primaries:
            raise BadRequest(
                f"file {f.path!r} is {f.descriptor_type} but there is no {f.descriptor_type} PRIMARY_DESCRIPTOR"
            )
        if f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type == "CWL":
            _check_cwl(f)
    return out


def _wdl_documents(files: Sequence[FileSpec]) -> dict[str, bytes]:
    return {
        f.path: f.content
        for f in files
        if f.descriptor_type == "WDL" and f.file_type in ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR")
    }


def _check_wdl(files: Sequence[FileSpec]) -> list[str]:
    """Every WDL descriptor parses and type-checks with its imports, which must all be among the
    version's WDL descriptors (relative, no URL, no host path), and declares a version WES runs
    (1.0 or 1.1): checked before anything is stored or signed. The versions found, in order."""
    documents = _wdl_documents(files)
    if not documents:
        return []
    primary = next(f.path for f in files if f.file_type == "PRIMARY_DESCRIPTOR" and f.descriptor_type == "WDL")
    versions: list[str] = []
    for path in [primary, *sorted(p for p in documents if p != primary)]:
        try:
            doc = load_wdl(documents, path)
        except WdlDocumentError as exc:
            raise BadRequest(f"WDL descriptor {path!r}: {exc.message}") from None
        version = wdl_version(doc)
        if version not in versions:
            versions.append(version)
    return versions


def _check_cwl(f: FileSpec) -> None:
    try:
        text_ = f.content.decode("utf-8")
        doc = yaml.safe_load(text_)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BadRequest(
            f"CWL descriptor {f.path!r} is not valid YAML/JSON: {str(exc).splitlines()[0][:200]}"
        ) from None
    if not isinstance(doc, dict) or "class" not in doc or "cwlVersion" not in doc:
        raise BadRequest(f"CWL descriptor {f.path!r} must be a CWL document with 'cwlVersion' and 'class'")


def _language_versions(files: Sequence[FileSpec], wdl_versions: list[str]) -> dict[str, list[str]]:
    """Each language's versions: CWL's as its documents declare them, WDL's as miniwdl read them."""
    out: dict[str, list[str]] = {}
    for f in files:
        if f.file_type not in ("PRIMARY_DESCRIPTOR", "SECONDARY_DESCRIPTOR") or f.descriptor_type != "CWL":
            continue
        m = _CWL_VERSION.search(f.content.decode("utf-8", "replace"))
        if m:
            versions = out.setdefault(f.descriptor_type, [])
            if m.group(1) not in versions:
                versions.append(m.group(1))
    if wdl_versions:
        out["WDL"] = list(wdl_versions)
    return out


def _images(value: Any) -> list[ImageSpec]:
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "images must be a non-empty list of image references: every version is pinned to its image "
            "(the first one is the signed subject)"
        )
    if len(value) > MAX_IMAGES:
        raise BadRequest(f"a tool version may reference at most {MAX_IMAGES} images")
    out: list[ImageSpec] = []
    for entry in value:
        if isinstance(entry, str):
            out.append(ImageSpec(entry, None))
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - {"reference", "digest"})
            if unknown:
                raise BadRequest(f"unknown image field(s): {', '.join(unknown)}")
            ref = entry.get("reference")
            digest = entry.get("digest")
            if not isinstance(ref, str) or (digest is not None and not isinstance(digest, str)):
                raise BadRequest("an image must be a reference string or {reference, digest}")
            out.append(ImageSpec(ref, digest))
        else:
            raise BadRequest("an image must be a reference string or {reference, digest}")
    if len({i.reference for i in out}) != len(out):
        raise BadRequest("the same image reference appears twice")
    return out
