"""A typed client for the HelixGate APIs, shared by the CLI, the demo and the tests:
publish a tool version, upload and grant data, submit and follow runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping
from urllib.parse import quote

import requests

from helixgate.client import ApiClient, ClientError, json_object
from helixgate.errors import BadRequest, HelixGateError, IntegrityError, UpstreamError, VerificationError
from helixgate.integrity import CHUNK, check_sha256, normalize_sha256
from helixgate.uris import has_scheme, parse_drs

WES = "/ga4gh/wes/v1"
TRS = "/ga4gh/trs/v2"
DRS = "/ga4gh/drs/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


_RETRYABLE_STATUS = (502, 503, 504)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class UploadResult:
    object: dict[str, Any]
    reused: bool  # an earlier attempt had already stored these bytes: no second copy was made
    attempts: int


@dataclass(frozen=True)
class VerifiedDownload:
    object_id: str
    uri: str
    sha256: str
    size: int
    path: Path | None  # None when the bytes were only checked, not kept


@dataclass(frozen=True)
class VersionVerification:
    tool_id: str
    version_id: str
    signer: str
    subject_name: str
    subject_digest: str
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 hex, re-computed from the served content


@dataclass(frozen=True)
class OutputFile:
    name: str  # output name, with [i] / .key for files inside arrays and records
    uri: str  # drs://host/id
    basename: str
    checksum: str | None  # sha256 hex the run recorded, when it did


# ---------------------------------------------------------------------- helpers
def object_id_of(ref: str) -> str:
    """The object id of ``drs://<host>/<id>`` or of a bare id."""
    ref = ref.strip()
    drs = parse_drs(ref)
    if drs is not None:
        return drs.object_id
    if not ref or "/" in ref or ":" in ref:
        raise BadRequest(f"not a DRS object id or drs:// URI: {ref[:120]!r}")
    return ref


def sha256_of(obj: Mapping[str, Any]) -> str:
    """The object's sha-256 checksum (hex); IntegrityError when the server gave none."""
    for c in obj.get("checksums") or []:
        if isinstance(c, dict) and str(c.get("type", "")).lower() in ("sha-256", "sha256"):
            return normalize_sha256(str(c.get("checksum", "")))
    raise IntegrityError(
        f"object {obj.get('id')} has no sha-256 checksum to verify against", subject=str(obj.get("id"))
    )


def sha256_path(path: Path, progress: Callable[[int], None] | None = None) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            sha.update(block)
            if progress:
                progress(len(block))
    return sha.hexdigest()


def trust_policy_from_material(material: Mapping[str, Any]) -> Any:
    """The verification policy described by a registry's published trust material (``trust_material()``)."""
    from helixgate.signing import KeyTrustPolicy, SigstoreTrustPolicy

    kind = material.get("kind")
    if kind == "key":
        return KeyTrustPolicy.from_trust_material(material)
    if kind == "sigstore":
        identities = tuple(
            (str(i.get("identity", "")), str(i.get("issuer", "")))
            for i in material.get("identities") or []
            if isinstance(i, dict)
        )
        config = json.dumps(material.get("trustConfig") or {})
        return SigstoreTrustPolicy(trust_config_json=config, identities=identities)
    raise BadRequest(f"signing trust material has kind {str(kind)[:40]!r}: expected 'key' or 'sigstore'")


def _pinned_digest(image: Mapping[str, Any], digest_kind: str) -> str:
    return str(image.get("manifest_digest") if digest_kind == "manifest" else image.get("config_digest") or "")


def verify_tool_version(
    record: Mapping[str, Any], bundle: str | bytes, trust_material: Mapping[str, Any]
) -> VersionVerification:
    """Re-verify a published version on this machine, trusting nothing the server computed.

    The bundle must verify under ``trust_material`` for the record's tool, version and pinned
    primary image digest; every served file's SHA-256 (re-computed from its content) must equal
    both the recorded checksum and the signed one, and every signed file must be served.
    ``record`` is ``version_record(..., content=True)``. Raises VerificationError / IntegrityError.
    """
    from helixgate.signing import verify_tool_bundle

    tool_id, version_id = str(record.get("tool_id")), str(record.get("version_id"))
    label = f"{tool_id} {version_id}"
    sig = record.get("signature") or {}
    if not sig.get("signed"):
        raise VerificationError(f"tool version {label} is not signed", subject=label)
    digest = str(sig.get("subject_digest") or "")
    primary = next((i for i in record.get("images") or [] if i.get("primary")), None)
    if primary is not None:
        pinned = _pinned_digest(primary, str(sig.get("digest_kind")))
        if pinned != digest:
            raise VerificationError(
                f"{label}: signed subject {digest} is not the pinned primary image digest {pinned}",
                subject=label,
                expected=pinned,
                actual=digest,
            )
    verified = verify_tool_bundle(
        bundle,
        policy=trust_policy_from_material(trust_material),
        expected_digest=digest,
        tool_id=tool_id,
        version_id=version_id,
    )
    signed = dict(verified.claim.descriptor_checksums)
    files: dict[str, str] = {}
    for f in record.get("files") or []:
        path = str(f.get("path"))
        if "content" not in f:
            raise BadRequest(f"version record of {label} carries no file content (fetch it with content=True)")
        actual = hashlib.sha256(str(f["content"]).encode("utf-8")).hexdigest()
        check_sha256(f"{label} file {path} (recorded checksum)", str((f.get("checksum") or {}).get("checksum")), actual)
        if path not in signed:
            raise VerificationError(f"{label}: file {path} is not covered by the signature", subject=label)
        check_sha256(f"{label} file {path} (signed checksum)", signed[path], actual)
        files[path] = actual
    missing = sorted(set(signed) - set(files))
    if missing:
        raise VerificationError(f"{label}: signed file(s) not served: {', '.join(missing)}", subject=label)
    return VersionVerification(
        tool_id, version_id, str(verified.signer), str(verified.claim.image_name), verified.subject_digest, files
    )


def check_recorded_checksums(sent: Mapping[str, str], record: Mapping[str, Any]) -> None:
    """The registry hashed what it received: every file sent must be recorded with the SHA-256 of
    exactly the bytes sent (``sent`` maps path to content). Raises IntegrityError (expected = ours)."""
    recorded = {str(f.get("path")): f for f in record.get("files") or [] if isinstance(f, Mapping)}
    for path, content in sent.items():
        local = hashlib.sha256(content.encode("utf-8")).hexdigest()
        if path not in recorded:
            raise IntegrityError(f"descriptor {path} is not recorded by the registry", subject=path, expected=local)
        actual = str((recorded[path].get("checksum") or {}).get("checksum"))
        check_sha256(f"descriptor {path} as recorded by the registry", local, actual)


def output_files(outputs: Mapping[str, Any]) -> list[OutputFile]:
    """Every File with a drs:// location in a run's outputs (nested arrays and records included)."""
    found: list[OutputFile] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict):
            location = value.get("location")
            if value.get("class") == "File" and isinstance(location, str) and has_scheme(location, "drs"):
                checksum = value.get("checksum")
                hex_ = checksum.split("$", 1)[1] if isinstance(checksum, str) and checksum.startswith("sha") else None
                basename = str(value.get("basename") or location.rsplit("/", 1)[-1])
                found.append(OutputFile(name, location, basename, hex_))
            for key, inner in value.items():
                if isinstance(inner, (dict, list)):
                    walk(f"{name}.{key}", inner)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(f"{name}[{i}]", inner)

    for key, value in (outputs or {}).items():
        walk(str(key), value)
    return found


def _retryable(exc: HelixGateError) -> bool:
    return isinstance(exc, UpstreamError) or (isinstance(exc, ClientError) and exc.status in _RETRYABLE_STATUS)


@dataclass
class HelixGate:
    api: ApiClient

    @classmethod
    def connect(cls, url: str, token: str | None, *, verify: bool | str = True) -> HelixGate:
        return cls(ApiClient(url, token, verify=verify))

    # ------------------------------------------------------------------ TRS
    def create_tool(
        self, organization: str, name: str, *, tool_id: str | None = None, description: str = ""
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"organization": organization, "name": name, "description": description}
        if tool_id:
            body["id"] = tool_id
        return self.api.post_object(f"{TRS}/x-helixgate/tools", body)

    def publish_version(
        self,
        tool_id: str,
        version_id: str,
        files: Mapping[str, str],
        images: list[str],
        *,
        primary: str,
        descriptor_type: str = "CWL",
    ) -> dict[str, Any]:
        entries = [
            {
                "path": path,
                "content": content,
                "file_type": "PRIMARY_DESCRIPTOR" if path == primary else "SECONDARY_DESCRIPTOR",
            }
            for path, content in files.items()
        ]
        body = {"id": version_id, "files": entries, "images": images, "descriptor_type": descriptor_type}
        return self.api.post_object(f"{TRS}/x-helixgate/tools/{quote(tool_id, safe='')}/versions", body)

    def version_record(self, tool_id: str, version_id: str, *, content: bool = False) -> dict[str, Any]:
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        params = {"include_content": "true"} if content else None
        return self.api.get_object(f"{TRS}/x-helixgate/tools/{t}/versions/{v}", params=params)

    def trust_material(self) -> dict[str, Any]:
        return self.api.get_object(f"{TRS}/x-helixgate/signing/trust")

    def get_tool(self, tool_id: str) -> dict[str, Any]:
        """The tool with its versions and HelixGate fields (owner, times)."""
        return self.api.get_object(f"{TRS}/x-helixgate/tools/{quote(tool_id, safe='')}")

    def version_bundle(self, tool_id: str, version_id: str) -> str:
        """The registry's Sigstore bundle for a version, exactly as signed."""
        t, v = quote(tool_id, safe=""), quote(version_id, safe="")
        return self.api.request("GET", f"{TRS}/x-helixgate/tools/{t}/versions/{v}/bundle").text

    def verify_version(
        self, tool_id: str, version_id: str, *, trust_material: Mapping[str, Any] | None = None
    ) -> VersionVerification:
        """``verify_tool_version`` on what the registry serves; ``trust_material`` defaults to the registry's."""
        record = self.version_record(tool_id, version_id, content=True)
        bundle = self.version_bundle(tool_id, version_id)
        return verify_tool_version(record, bundle, trust_material or self.trust_material())

    # ------------------------------------------------------------------ DRS
    def create_dataset(self, name: str, *, public: bool = False) -> dict[str, Any]:
        return self.api.post_object(f"{DRS}/x-helixgate/datasets", {"name": name, "public": public})

    def grant(self, dataset_id: str, username: str) -> dict[str, Any]:
        return self.api.post_object(
            f"{DRS}/x-helixgate/datasets/{quote(dataset_id, safe='')}/grants", {"username": username}
        )

    def upload(
        self,
        data: bytes | BinaryIO | Iterator[bytes],
        *,
        name: str,
        dataset_id: str | None = None,
        sha256: str | None = None,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        params = {
            k: v
            for k, v in {"name": name, "dataset_id": dataset_id, "sha256": sha256, "mime_type": mime_type}.items()
            if v
        }
        resp = self.api.request(
            "POST",
            f"{DRS}/x-helixgate/objects",
            params=params,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return json_object(resp)

    def upload_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        dataset_id: str | None = None,
        sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        def chunks() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while block := fh.read(1024 * 1024):
                    if progress:
                        progress(len(block))
                    yield block

        return self.upload(chunks(), name=name or path.name, dataset_id=dataset_id, sha256=sha256)

    def get_object(self, object_id: str) -> dict[str, Any]:
        return self.api.get_object(f"{DRS}/objects/{quote(object_id, safe='')}")

    def download(self, object_id: str) -> Iterator[bytes]:
        """The object's bytes through a short-lived signed URL (the server re-hashes while streaming)."""
        yield from self._object_bytes(self.get_object(object_id))

    def _object_bytes(self, obj: Mapping[str, Any]) -> Iterator[bytes]:
        object_id = str(obj["id"])
        method = next((m for m in obj.get("access_methods") or [] if m.get("type") == "https"), None)
        if method is None:
            raise HelixGateError(f"object {object_id} has no https access method")
        url = self.api.get_json(f"{DRS}/objects/{quote(object_id, safe='')}/access/{method['access_id']}")["url"]
        yield from self.api.stream(url)

    def download_verified(
        self, ref: str, dest: Path | None = None, *, progress: Callable[[int], None] | None = None
    ) -> VerifiedDownload:
        """Download ``ref`` (id or drs:// URI) and check size and SHA-256 of the received bytes here.

        With ``dest`` the bytes land in a temporary file renamed to ``dest`` only once they
        verified; a mismatch or a stream cut short raises IntegrityError and leaves nothing behind.
        """
        obj = self.get_object(object_id_of(ref))
        object_id, uri = str(obj["id"]), str(obj.get("self_uri") or ref)
        expected, expected_size = sha256_of(obj), int(obj.get("size") or 0)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part") if dest is not None else None
        sha, size = hashlib.sha256(), 0
        try:
            with open(tmp, "xb") if tmp is not None else open(os.devnull, "wb") as fh:
                try:
                    for chunk in self._object_bytes(obj):
                        sha.update(chunk)
                        size += len(chunk)
                        fh.write(chunk)
                        if progress:
                            progress(len(chunk))
                except (requests.RequestException, UpstreamError) as exc:
                    if size == 0 and isinstance(exc, UpstreamError) and exc.message.startswith("cannot reach"):
                        raise
                    raise IntegrityError(
                        f"download of {uri} cut short after {size} of {expected_size} bytes "
                        f"({getattr(exc, 'message', type(exc).__name__)})",
                        subject=uri,
                        expected=str(expected_size),
                        actual=str(size),
                    ) from None
            if size != expected_size:
                raise IntegrityError(
                    f"download of {uri} has {size} bytes, expected {expected_size} (truncated stream)",
                    subject=uri,
                    expected=str(expected_size),
                    actual=str(size),
                )
            check_sha256(uri, expected, sha.hexdigest())
            if tmp is not None and dest is not None:
                os.replace(tmp, dest)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return VerifiedDownload(object_id, uri, sha.hexdigest(), size, dest)

    def find_objects(self, sha256: str) -> list[dict[str, Any]]:
        """Objects with these bytes that the caller may read."""
        params = {"checksum": normalize_sha256(sha256)}
        return list(self.api.get_json(f"{DRS}/x-helixgate/objects", params=params)["objects"])

    def register_object(
        self,
        url: str,
        *,
        name: str | None = None,
        dataset_id: str | None = None,
        sha256: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Register an existing ``s3://bucket/key`` in place (the server reads it once to hash it)."""
        body = {
            k: v
            for k, v in {
                "url": url,
                "name": name,
                "dataset_id": dataset_id,
                "sha256": sha256,
                "description": description,
            }.items()
            if v
        }
        return self.api.post_object(f"{DRS}/x-helixgate/registrations", body)

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self.api.get_object(f"{DRS}/x-helixgate/datasets/{quote(dataset_id, safe='')}")

    def revoke(self, dataset_id: str, username: str) -> None:
        d, u = quote(dataset_id, safe=""), quote(username, safe="")
        self.api.request("DELETE", f"{DRS}/x-helixgate/datasets/{d}/grants/{u}")

    def upload_file_idempotent(
        self,
        path: Path,
        *,
        name: str | None = None,
        dataset_id: str | None = None,
        sha256: str | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        progress: Callable[[int], None] | None = None,
    ) -> UploadResult:
        """Upload ``path`` so that retrying after a lost connection never stores the bytes twice.

        ``sha256`` (computed from the file when not given) travels as the expected checksum, so
        the server refuses bytes corrupted in transit. Connection errors and 502/503/504 are
        retried up to ``retries`` times with exponential backoff; before each retry the store is
        searched for an object with the same bytes and name that did not exist before the first
        attempt: an earlier attempt that did land is returned, not repeated.
        """
        digest = normalize_sha256(sha256) if sha256 else sha256_path(path)
        name = name or path.name
        existing: set[str] | None = None  # objects with these bytes before our first attempt
        attempt = 0
        while True:
            attempt += 1
            try:
                if existing is None:
                    existing = {str(o.get("id")) for o in self.find_objects(digest)}
                elif (landed := self._landed(digest, name, dataset_id, existing)) is not None:
                    return UploadResult(landed, True, attempt)
                obj = self.upload_file(path, name=name, dataset_id=dataset_id, sha256=digest, progress=progress)
                return UploadResult(obj, False, attempt)
            except HelixGateError as exc:
                if not _retryable(exc) or attempt > retries:
                    if attempt > 1 and _retryable(exc):
                        message = f"{exc.message} (gave up after {attempt} attempts)"
                        raise type(exc)(message, status=exc.status) from None
                    raise
                time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))

    def _landed(self, digest: str, name: str, dataset_id: str | None, existing: set[str]) -> dict[str, Any] | None:
        # An earlier attempt landed if an object with the same bytes and name exists now that did
        # not exist before the first attempt (the newest, should there be several).
        landed = [
            obj
            for obj in self.find_objects(digest)
            if str(obj.get("id")) not in existing
            and obj.get("name") == name
            and ("dataset_id" not in obj or obj["dataset_id"] == dataset_id)
        ]
        return max(landed, key=lambda o: str(o.get("created_time") or "")) if landed else None

    # ------------------------------------------------------------------ platform
    def me(self) -> dict[str, Any]:
        """The calling user: username, roles and permissions."""
        return self.api.get_object("/helixgate/v1/me")

    # ------------------------------------------------------------------ WES
    def submit_run(
        self,
        workflow_url: str,
        params: Mapping[str, Any],
        *,
        attachments: Mapping[str, bytes] | None = None,
        workflow_type_version: str | None = None,
        tags: Mapping[str, str] | None = None,
        workflow_type: str = "CWL",
    ) -> str:
        """Submit a run. ``workflow_type`` is CWL or WDL; without ``workflow_type_version`` a
        CWL run says v1.2 and a WDL run says the version its document declares (the attached
        main file, or the TRS version's recorded WDL version)."""
        if workflow_type_version is None:
            workflow_type_version = (
                self.wdl_version_of(workflow_url, attachments) if workflow_type.upper() == "WDL" else "v1.2"
            )
        form = {
            "workflow_url": workflow_url,
            "workflow_type": workflow_type,
            "workflow_type_version": workflow_type_version,
            "workflow_params": json.dumps(dict(params)),
            "tags": json.dumps(dict(tags or {})),
        }
        # always multipart/form-data (the WES contract), even without attachments
        parts: list[tuple[str, tuple[str | None, Any]]] = [(k, (None, v)) for k, v in form.items()]
        parts += [("workflow_attachment", (name, content)) for name, content in (attachments or {}).items()]
        resp = self.api.request("POST", f"{WES}/runs", files=parts)
        return str(resp.json()["run_id"])

    def wdl_version_of(self, workflow_url: str, attachments: Mapping[str, bytes] | None = None) -> str:
        """The WDL version of a workflow: parsed from the attached main file, or for a
        ``trs://host/tool/version`` the version TRS recorded for its WDL descriptors."""
        if attachments and workflow_url in attachments:
            from helixgate.wdl_documents import declared_version

            return declared_version(attachments[workflow_url], workflow_url)
        if has_scheme(workflow_url, "trs"):
            parts = workflow_url.strip()[len("trs://") :].split("/")
            if len(parts) == 3 and all(parts):
                t, v = quote(parts[1], safe=""), quote(parts[2], safe="")
                record = self.api.get_object(f"{TRS}/tools/{t}/versions/{v}")
                versions = (record.get("descriptor_type_version") or {}).get("WDL") or []
                if versions:
                    return str(versions[0])
                raise BadRequest(f"TRS version {parts[1]}:{parts[2]} has no WDL descriptor")
        raise BadRequest(
            f"cannot tell the WDL version of {workflow_url[:120]!r}: give workflow_type_version (1.0 or 1.1)"
        )

    def run_status(self, run_id: str) -> str:
        return str(self.api.get_json(f"{WES}/runs/{run_id}/status")["state"])

    def run_log(self, run_id: str) -> dict[str, Any]:
        return self.api.get_object(f"{WES}/runs/{run_id}")

    def run_tasks(self, run_id: str) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.api.get_json(
                f"{WES}/runs/{run_id}/tasks", params={"page_size": 100, **({"page_token": token} if token else {})}
            )
            tasks.extend(page.get("task_logs") or [])
            token = page.get("next_page_token") or ""
            if not token:
                return tasks

    def run_evidence(self, run_id: str) -> list[dict[str, Any]]:
        """What the verification gate checked for each task (signer, image digests, each input's
        expected vs actual SHA-256) and why a task was refused (a HelixGate extension)."""
        return list(self.api.get_object(f"{WES}/x-helixgate/runs/{quote(run_id, safe='')}/evidence")["tasks"])

    def cancel_run(self, run_id: str) -> None:
        self.api.request("POST", f"{WES}/runs/{run_id}/cancel")

    def wait(self, run_id: str, *, timeout: float = 600, poll: float = 0.5) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_status(run_id)
            if state in TERMINAL:
                return state
            if time.monotonic() > deadline:
                raise HelixGateError(f"run {run_id} still {state} after {timeout:.0f}s")
            time.sleep(poll)

    def run_stream(self, run_id: str, stream: str = "stdout", *, task_id: str | None = None) -> str:
        """A run's combined stdout/stderr, or one task's."""
        r = quote(run_id, safe="")
        if task_id:
            path = f"{WES}/x-helixgate/runs/{r}/tasks/{quote(task_id, safe='')}/{stream}"
        else:
            path = f"{WES}/x-helixgate/runs/{r}/log/{stream}"
        return self.api.request("GET", path).text

    def download_outputs(
        self, run_id: str, directory: Path, *, progress: Callable[[int], None] | None = None
    ) -> list[tuple[OutputFile, VerifiedDownload]]:
        """Download every drs:// output File of a run into ``directory/<output name>/<basename>``, verified.

        Each file's SHA-256 must match its DRS checksum and, when the run recorded one, the run's.
        """
        files = output_files(self.run_log(run_id).get("outputs") or {})
        done: list[tuple[OutputFile, VerifiedDownload]] = []
        for out in files:
            folder = directory / _safe_segment(out.name)
            folder.mkdir(parents=True, exist_ok=True)
            got = self.download_verified(out.uri, folder / _safe_segment(out.basename), progress=progress)
            if out.checksum:
                check_sha256(f"output {out.name} of run {run_id} ({out.uri})", out.checksum, got.sha256)
            done.append((out, got))
        return done


def _safe_segment(name: str) -> str:
    """One path segment, never '.', '..' or containing a separator (names come from the server)."""
    cleaned = re.sub(r"[^A-Za-z0-9._\[\]-]", "_", name)[:200].strip(".") or "_"
    return cleaned
