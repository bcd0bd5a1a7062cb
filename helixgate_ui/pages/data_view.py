"""Data stewards' pages, the logic: view models built from DRS answers and the form checks.

Plain functions over the public API's JSON (no Flask here). What a user may do is the data
store's rule, mirrored only to hide what the API would refuse: managing a dataset (adding
objects, granting, revoking) is for its creator or an administrator, with ``drs:write`` /
``drs:grant``; the API still decides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import IO, Any, Iterable, Iterator, Mapping, Protocol
from urllib.parse import quote

from helixgate.errors import BadRequest, HelixGateError, IntegrityError
from helixgate.integrity import check_sha256
from helixgate.sdk import DRS, sha256_of

_OBJECT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")  # the upload API's `name` pattern
_HEX64 = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")  # helixgate.users' rule


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def _perms(me: Mapping[str, Any]) -> set[str]:
    return {str(p) for p in me.get("permissions") or []}


def may_manage(dataset: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Creator or administrator (drs_store.access.may_manage_dataset)."""
    return dataset.get("created_by") == me.get("username") or "drs:admin" in _perms(me)


def may_grant(dataset: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    return "drs:grant" in _perms(me) and may_manage(dataset, me)


def may_upload(dataset: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    return "drs:write" in _perms(me) and may_manage(dataset, me)


# ---------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetRow:
    id: str
    name: str
    description: str
    public: bool
    created_by: str
    created_time: str
    object_count: int
    may_grant: bool
    may_upload: bool


def dataset_row(d: Mapping[str, Any], me: Mapping[str, Any]) -> DatasetRow:
    count = d.get("object_count")
    return DatasetRow(
        id=_str(d.get("id")),
        name=_str(d.get("name")),
        description=_str(d.get("description")),
        public=bool(d.get("public")),
        created_by=_str(d.get("created_by")),
        created_time=_str(d.get("created_time")),
        object_count=count if isinstance(count, int) else 0,
        may_grant=may_grant(d, me),
        may_upload=may_upload(d, me),
    )


def dataset_rows(datasets: Iterable[Mapping[str, Any]], me: Mapping[str, Any]) -> list[DatasetRow]:
    return [dataset_row(d, me) for d in datasets if isinstance(d, Mapping)]


# ---------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class Provenance:
    run_id: str
    task_id: str
    image_digest: str
    tool: str
    workflow: str
    input_checksums: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ObjectRow:
    id: str
    uri: str
    name: str
    size: int | None
    size_text: str
    sha256: str
    created_time: str
    mime_type: str
    description: str
    quarantined: bool
    bundle: bool
    provenance: Provenance | None


def object_sha256(obj: Mapping[str, Any]) -> str:
    for c in obj.get("checksums") or []:
        if isinstance(c, Mapping) and _str(c.get("type")).lower() in ("sha-256", "sha256"):
            return _str(c.get("checksum"))
    return ""


def provenance_of(obj: Mapping[str, Any]) -> Provenance | None:
    p = obj.get("provenance")
    if not isinstance(p, Mapping):
        return None
    inputs = p.get("input_checksums")
    return Provenance(
        run_id=_str(p.get("run_id")),
        task_id=_str(p.get("task_id")),
        image_digest=_str(p.get("image_digest")),
        tool=_str(p.get("tool")),
        workflow=_str(p.get("workflow")),
        input_checksums=tuple(sorted((str(k), _str(v)) for k, v in inputs.items()))
        if isinstance(inputs, Mapping)
        else (),
    )


def object_row(obj: Mapping[str, Any]) -> ObjectRow:
    size = obj.get("size")
    size = size if isinstance(size, int) else None
    return ObjectRow(
        id=_str(obj.get("id")),
        uri=_str(obj.get("self_uri")),
        name=_str(obj.get("name")),
        size=size,
        size_text=human_size(size),
        sha256=object_sha256(obj),
        created_time=_str(obj.get("created_time")),
        mime_type=_str(obj.get("mime_type")),
        description=_str(obj.get("description")),
        quarantined=bool(obj.get("x-helixgate-quarantined")),
        bundle="contents" in obj,
        provenance=provenance_of(obj),
    )


# ---------------------------------------------------------------------------- grants
@dataclass(frozen=True)
class GrantRow:
    username: str
    granted_by: str
    granted_time: str
    revoked_by: str
    revoked_time: str

    @property
    def active(self) -> bool:
        return not self.revoked_time


def grant_rows(grants: Iterable[Mapping[str, Any]]) -> list[GrantRow]:
    return [
        GrantRow(
            username=_str(g.get("username")),
            granted_by=_str(g.get("granted_by")),
            granted_time=_str(g.get("granted_time")),
            revoked_by=_str(g.get("revoked_by")),
            revoked_time=_str(g.get("revoked_time")),
        )
        for g in grants
        if isinstance(g, Mapping)
    ]


def parse_username(value: str) -> str:
    value = value.strip()
    if not _USERNAME.match(value):
        raise BadRequest("user name: 1-128 letters, digits or . _ @ + - (starting with a letter or digit)")
    return value


# ---------------------------------------------------------------------------- forms
def parse_dataset_form(name: str, description: str, public: bool) -> dict[str, Any]:
    name = name.strip()
    if not 0 < len(name) <= 255:
        raise BadRequest("dataset name: 1-255 characters")
    if len(description) > 4096:
        raise BadRequest("description: at most 4096 characters")
    return {"name": name, "description": description, "public": bool(public)}


def object_name(requested: str, filename: str) -> str:
    """The object's name: the one typed, else the file's base name made to fit the API's pattern."""
    name = requested.strip()
    if name:
        if not _OBJECT_NAME.match(name):
            raise BadRequest("object name: 1-255 letters, digits, '.', '_' or '-'")
        return name
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base)[:255].strip(".")
    if not cleaned:
        raise BadRequest("object name: give one (the file's name has no usable characters)")
    return cleaned


def expected_sha256(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not _HEX64.match(value):
        raise BadRequest("expected SHA-256: 64 hexadecimal characters (optionally prefixed sha256:)")
    return value.lower().removeprefix("sha256:")


# ---------------------------------------------------------------------------- uploads
_BLOCK = 1024 * 1024


class DataClient(Protocol):
    """What an upload needs of ``helixgate.sdk.HelixGate``."""

    api: Any

    def upload(self, data: Any, *, name: str, dataset_id: str | None = None, sha256: str | None = None) -> Any: ...


class Relay:
    """Passes a stream on in blocks, hashing (SHA-256) and counting what went through."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.sha, self.size = stream, hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        while block := self.stream.read(_BLOCK):
            self.sha.update(block)
            self.size += len(block)
            yield block


def relay_upload(
    hg: DataClient,
    stream: IO[bytes],
    *,
    name: str,
    dataset_id: str | None,
    expected: str | None,
    length: int | None,
) -> dict[str, Any]:
    """Send ``stream`` to the DRS upload API and prove the stored object holds exactly the bytes
    relayed (count and SHA-256); otherwise the object is deleted and IntegrityError raised.

    ``expected`` (the SHA-256 the browser computed or the user typed) travels as the data
    store's expected checksum, so bytes that changed before reaching it are refused (422) and
    nothing is stored; ``length`` is the Content-Length the browser announced."""
    relay = Relay(stream)
    obj: dict[str, Any] = hg.upload(iter(relay), name=name, dataset_id=dataset_id, sha256=expected)
    try:
        if length is not None and relay.size != length:
            raise IntegrityError(
                f"upload of {name} was cut short: {relay.size} of {length} bytes arrived",
                subject=name,
                expected=str(length),
                actual=str(relay.size),
            )
        check_sha256(f"upload of {name} (stored vs relayed by the dashboard)", relay.sha.hexdigest(), sha256_of(obj))
    except HelixGateError:
        hg.api.request("DELETE", f"{DRS}/x-helixgate/objects/{quote(str(obj.get('id')), safe='')}")
        raise
    return obj


def verified_stream(chunks: Iterable[bytes], *, expected_sha256: str, size: int, what: str) -> Iterator[bytes]:
    """Pass ``chunks`` on, holding back the last one until the whole stream's size and SHA-256
    match the record: a mismatch ends the stream before its last bytes (IntegrityError), so
    what the browser saved can never pass as complete."""
    sha, seen, held = hashlib.sha256(), 0, b""
    for chunk in chunks:
        if not chunk:
            continue
        if held:
            yield held
        sha.update(chunk)
        seen += len(chunk)
        if seen > size:
            raise IntegrityError(f"{what}: more than the recorded {size} bytes", expected=str(size), actual=str(seen))
        held = chunk
    if seen != size:
        raise IntegrityError(f"{what}: {seen} of {size} bytes arrived", expected=str(size), actual=str(seen))
    check_sha256(what, expected_sha256, sha.hexdigest())
    if held:
        yield held


def download_name(row: ObjectRow) -> str:
    """A safe file name for Content-Disposition (the object's name, else its id)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", row.name or row.id)[:200].strip(".") or row.id
