"""Image references -- the platform's one grammar -- and offline container images.

``parse_reference`` is the only parser of ``[host[:port]/]repo[/path][:tag][@sha256:<hex>]``
(and of a bare local image id ``sha256:<hex>``); ``pinned_name`` the only spelling of a pinned
image. TRS resolves references with it, WES checks task images with it, the busybox helpers
below check names with it.

Offline images: build a busybox image by ``docker import`` and push it to a registry.

No image can be pulled in air-gapped sites (or in the test environment), so the demo and the
tests build a tiny image from the host's statically linked busybox (Debian ``busybox-static``)
with one applet link per command. The rootfs tar is deterministic (fixed mtimes and owners),
so identical inputs give identical layers; the image id still differs per import because the
engine stamps the image config with its creation time.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from helixgate.errors import BadRequest, ConfigurationError, IntegrityError, UpstreamError

BUSYBOX_PATH = "/bin/busybox"
MAX_REFERENCE_LENGTH = 512
# The distribution reference grammar (github.com/distribution/reference), sha256 digests only.
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?\Z"
)
_PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


# --------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference. ``registry`` is None for local-only images."""

    original: str
    registry: str | None
    repository: str
    tag: str | None
    digest: str | None  # the digest the client expects, "sha256:<hex>"

    @property
    def is_local(self) -> bool:
        return self.registry is None

    @property
    def name(self) -> str:
        """``registry/repository`` (or just the repository for local images)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository


def parse_reference(reference: str) -> ImageReference:
    """Parse ``[host[:port]/]repo[/path][:tag][@sha256:<hex>]`` or ``sha256:<image id>``."""
    if not isinstance(reference, str) or not reference.strip():
        raise BadRequest("image reference must be a non-empty string")
    ref = reference.strip()
    if len(ref) > MAX_REFERENCE_LENGTH:
        raise BadRequest(f"image reference is longer than {MAX_REFERENCE_LENGTH} characters")
    if ref.startswith("sha256:"):
        if not DIGEST.match(ref):
            raise BadRequest(f"image id must be sha256: followed by 64 lower-case hex digits, got {ref[:80]!r}")
        return ImageReference(ref, None, "", None, ref)
    name, _, digest = ref.partition("@")
    if digest and not DIGEST.match(digest):
        raise BadRequest(f"image reference {ref[:80]!r}: digest must be sha256:<64 hex>, got {digest[:80]!r}")
    registry: str | None = None
    first, slash, rest = name.partition("/")
    # Docker's rule: the first component is a registry host if it has a '.' or ':' or is 'localhost'.
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not HOST.match(first):
            raise BadRequest(f"image reference {ref[:80]!r}: invalid registry host {first[:80]!r}")
        registry, name = first, rest
    tag: str | None = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not TAG.match(tag):
            raise BadRequest(f"image reference {ref[:80]!r}: invalid tag {tag[:80]!r}")
    if not REPOSITORY.match(name):
        raise BadRequest(f"image reference {ref[:80]!r}: invalid repository name {name[:80]!r}")
    if tag is None and not digest:
        raise BadRequest(f"image reference {ref[:80]!r} has neither a tag nor a digest: name the version explicitly")
    return ImageReference(ref, registry, name, tag, digest or None)


def pinned_reference(name: str | None, digest: str) -> str:
    """The one spelling of a pinned image: ``name@sha256:<manifest>``, or the bare image id
    ``sha256:<hex>`` of a local-only image (``name`` None)."""
    return f"{name}@{digest}" if name else digest


def pinned_name(registry_host: str, repository: str, manifest_digest: str, config_digest: str) -> str:
    """``host/repo@sha256:<manifest>`` for a registry image, the image id for a local-only one."""
    if registry_host:
        return pinned_reference(f"{registry_host}/{repository}", manifest_digest)
    return pinned_reference(None, config_digest)


# --------------------------------------------------------------------------- busybox images
# Used when `busybox --list-full` is unavailable; every entry is a busybox applet.
_FALLBACK_APPLETS = (
    "bin/sh", "bin/ls", "bin/cat", "bin/echo", "bin/touch", "bin/mkdir", "bin/rm", "bin/cp", "bin/mv",
    "bin/sleep", "bin/true", "bin/false", "bin/id", "bin/grep", "bin/dd", "bin/ln", "bin/chmod",
    "usr/bin/wc", "usr/bin/sort", "usr/bin/tr", "usr/bin/head", "usr/bin/tail", "usr/bin/md5sum",
    "usr/bin/sha256sum", "usr/bin/wget", "usr/bin/env", "usr/bin/yes", "usr/bin/test", "usr/bin/[",
    "usr/bin/nc", "usr/bin/seq", "usr/bin/cut", "usr/bin/uniq", "sbin/ip",
)
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def busybox_applets(busybox: str = BUSYBOX_PATH) -> list[str]:
    """Relative install paths of every applet (``bin/sh``, ``usr/bin/wget``...) of ``busybox``."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return list(_FALLBACK_APPLETS)
    applets = [line.strip() for line in out.decode().splitlines() if line.strip()]
    return applets or list(_FALLBACK_APPLETS)


def busybox_rootfs_tar(
    extra_files: Mapping[str, bytes] | None = None,
    *,
    busybox: str = BUSYBOX_PATH,
) -> bytes:
    """A rootfs tar: /bin/busybox, its applet links, /etc/passwd+group, /tmp, /work, plus ``extra_files``.

    ``extra_files`` maps absolute or relative paths to contents; a file starting with ``#!``
    is made executable (mode 0755), others are 0644.
    """
    try:
        with open(busybox, "rb") as f:
            busybox_bytes = f.read()
    except OSError as exc:
        raise ConfigurationError(f"busybox binary not readable at {busybox}: install busybox-static") from exc

    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(path: str, mode: int = 0o755) -> None:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub and sub not in dirs:
                    dirs.add(sub)
                    info = _tarinfo(sub, tarfile.DIRTYPE, mode if i == len(parts) else 0o755)
                    tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int) -> None:
            parent = posixpath.dirname(path)
            if parent:
                add_dir(parent)
            info = _tarinfo(path, tarfile.REGTYPE, mode)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "work", "root"):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox_bytes, 0o755)
        add_file("etc/passwd", _PASSWD, 0o644)
        add_file("etc/group", _GROUP, 0o644)
        for applet in busybox_applets(busybox):
            rel = applet.strip("/")
            if not rel or rel == "bin/busybox" or ".." in rel.split("/"):
                continue
            add_dir(posixpath.dirname(rel))
            link = _tarinfo(rel, tarfile.SYMTYPE, 0o777)
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        for raw_path, data in sorted((extra_files or {}).items()):
            rel = posixpath.normpath(raw_path).lstrip("/")
            if not rel or rel == "." or rel.startswith(".."):
                raise BadRequest(f"invalid path for an image file: {raw_path!r}")
            add_file(rel, data, 0o755 if data.startswith(b"#!") else 0o644)
    return buf.getvalue()


def _tarinfo(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_busybox_image(
    client: docker.DockerClient,
    repository: str,
    tag: str = "latest",
    extra_files: Mapping[str, bytes] | None = None,
    user: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    workdir: str = "/work",
    cmd: Iterable[str] = ("/bin/sh",),
) -> str:
    """Build ``repository:tag`` offline from a busybox rootfs; return the image id ``sha256:<hex>``."""
    _check_repository(repository, tag)
    changes = [f"CMD {_json_list(cmd)}", f"WORKDIR {workdir}", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    if user:
        changes.append(f"USER {user}")
    for key, value in sorted((labels or {}).items()):
        changes.append(f"LABEL {_json_str(key)}={_json_str(value)}")
    data = busybox_rootfs_tar(extra_files)
    try:
        client.api.import_image_from_data(data, repository=repository, tag=tag, changes=changes)
        image_id: str = client.api.inspect_image(f"{repository}:{tag}")["Id"]
    except docker.errors.APIError as exc:
        raise UpstreamError(f"docker import of {repository}:{tag} failed: {_explain(exc)}") from exc
    if not DIGEST.match(image_id):
        raise UpstreamError(f"docker import of {repository}:{tag} returned an unexpected image id {image_id[:80]!r}")
    return image_id


def push_image(
    client: docker.DockerClient,
    local_ref: str,
    registry_host: str,
    repository: str,
    tag: str,
) -> str:
    """Tag ``local_ref`` as ``registry_host/repository:tag``, push it, return ``sha256:<manifest digest>``.

    The digest comes from the push stream (``aux.Digest``), cross-checked against the
    ``RepoDigests`` entry the engine records after a push.
    """
    if not HOST.match(registry_host):
        raise BadRequest(f"invalid registry host {registry_host!r}")
    _check_repository(repository, tag)
    remote = f"{registry_host}/{repository}"
    try:
        if not client.api.tag(local_ref, remote, tag):
            raise UpstreamError(f"could not tag {local_ref} as {remote}:{tag}")
        stream: Iterable[dict[str, Any]] = client.api.push(remote, tag=tag, stream=True, decode=True)
        digest = _digest_from_push_stream(stream, f"{remote}:{tag}")
        repo_digests: list[str] = client.api.inspect_image(f"{remote}:{tag}").get("RepoDigests") or []
    except docker.errors.APIError as exc:
        raise UpstreamError(f"push of {remote}:{tag} failed: {_explain(exc)}") from exc
    recorded = {d.split("@", 1)[1] for d in repo_digests if d.startswith(remote + "@")}
    if digest is None:
        if len(recorded) != 1:
            raise UpstreamError(f"push of {remote}:{tag} reported no manifest digest")
        digest = recorded.pop()
    elif recorded and digest not in recorded:
        raise IntegrityError(
            f"manifest digest of {remote}:{tag} from the push stream is not the one the engine recorded",
            subject=f"{remote}:{tag}",
            expected=digest,
            actual=",".join(sorted(recorded)),
        )
    return digest


def _digest_from_push_stream(stream: Iterable[dict[str, Any]], what: str) -> str | None:
    digest: str | None = None
    for item in stream:
        if item.get("error") or item.get("errorDetail"):
            detail = item.get("errorDetail") or {}
            message = str(detail.get("message") or item.get("error"))[:300]
            raise UpstreamError(f"push of {what} failed: {message}")
        aux = item.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("Digest"), str):
            digest = aux["Digest"]
        else:
            m = _PUSH_DIGEST.search(str(item.get("status", "")))
            if m:
                digest = m.group(1)
    if digest is not None and not DIGEST.match(digest):
        raise UpstreamError(f"push of {what} reported a malformed digest {digest[:80]!r}")
    return digest


def _check_repository(repository: str, tag: str) -> None:
    if not REPOSITORY.match(repository):
        raise BadRequest(f"invalid repository name {repository!r}")
    if not TAG.match(tag):
        raise BadRequest(f"invalid tag {tag!r}")


def _json_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_json_str(i) for i in items) + "]"


def _json_str(value: str) -> str:
    return json.dumps(value)


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)[:300]
