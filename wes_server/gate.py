"""The verification gate: what a task may run is derived from the verified statement alone,
and everything read from the database or over HTTP (pins, checksums, paths, attachment
bytes, local image ids, intermediate files) is compared with it or with checksums the system
computed itself.

``TaskGate`` is the gate of one run's tasks, a plain object with its collaborators injected
(the signed versions, the local image inspector, the run's checksum registry, where refusals
are reported) and one method per phase: signature, digests and pin, local image, inputs.
``wes_server.tasks.run_task`` asks it to ``admit`` a task (CWL or WDL: the same request)
and then only launches the container.

Every check raises ``IntegrityError`` naming what differed, expected vs actual; ``admit``
reports it (a security event) and refuses the task. Nothing here talks to docker, HTTP or
SQL directly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from helixgate.errors import BadRequest, HelixGateError, IntegrityError, VerificationError
from helixgate.integrity import CHUNK
from helixgate.paths import check_relative_path, open_regular_nofollow
from helixgate.ports import ImagePin
from helixgate.signing import TrustPolicy, VerifiedStatement, verify_tool_bundle


@dataclass(frozen=True)
class SignedTool:
    """Every fact about a tool version a task may rely on, taken from a verified statement."""

    tool_id: str
    version_id: str
    image_name: str  # the signed subject's name (registry/repository, or a local name)
    image_digest: str  # sha256:<hex> of the subject (manifest digest or image id)
    digest_kind: str
    config_digest: str  # sha256:<hex>: the only local image id that may run
    descriptor_checksums: Mapping[str, str]  # relative path -> sha256 hex
    signer: str
    predicate_type: str

    @property
    def pinned_ref(self) -> str:
        """What the worker pulls (by manifest digest) or creates (by image id)."""
        if self.digest_kind == "manifest":
            return f"{self.image_name}@{self.image_digest}"
        return self.image_digest


def _differs(what: str, expected: str, actual: str, subject: str) -> IntegrityError:
    return IntegrityError(
        f"{what} differs from the signed statement: expected {expected}, got {actual}",
        subject=subject,
        expected=expected,
        actual=actual,
    )


def signed_tool(bundle: str, *, policy: TrustPolicy, tool_id: str, version_id: str) -> SignedTool:
    """Verify ``bundle`` as the statement of exactly ``tool_id``:``version_id`` (its own
    signature: no other version's bundle can pass, the predicate names tool and version) and
    return the signed facts. An empty bundle is an unsigned version."""
    if not bundle:
        raise VerificationError(
            f"tool version {tool_id}:{version_id} has no signature of its own: refusing it",
            subject=f"{tool_id}:{version_id}",
            expected="a signature bundle",
            actual="none",
        )
    verified: VerifiedStatement = verify_tool_bundle(
        bundle, policy=policy, expected_digest=None, tool_id=tool_id, version_id=version_id
    )
    claim = verified.claim
    if not claim.config_digest:
        raise VerificationError(
            f"the statement of {tool_id}:{version_id} ({verified.predicate_type}) does not sign the image "
            "configuration digest; the registry re-signs legacy statements at start-up",
            subject=f"{tool_id}:{version_id}",
            expected="a v2 statement with imageConfigDigest",
            actual=verified.predicate_type,
        )
    return SignedTool(
        tool_id=claim.tool_id,
        version_id=claim.version_id,
        image_name=claim.image_name,
        image_digest=claim.image_digest,
        digest_kind=claim.digest_kind,
        config_digest=claim.config_digest,
        descriptor_checksums=dict(claim.descriptor_checksums),
        signer=str(verified.signer),
        predicate_type=verified.predicate_type,
    )


def check_pin(pin: ImagePin, signed: SignedTool) -> None:
    """Compare what TRS's tables answered for an image (``pin``) with the signed facts."""
    subject = f"{signed.tool_id}:{signed.version_id}"
    pairs = (
        ("tool id", signed.tool_id, pin.tool_id),
        ("version id", signed.version_id, pin.version_id),
        ("image digest recorded in TRS", signed.image_digest, pin.signed_digest),
        ("image digest kind recorded in TRS", signed.digest_kind, pin.digest_kind),
        ("image configuration digest recorded in TRS", signed.config_digest, pin.image_id),
        ("pinned image reference recorded in TRS", signed.pinned_ref, pin.pinned_ref),
    )
    for what, expected, actual in pairs:
        if not hmac.compare_digest(expected.encode(), actual.encode()):
            raise _differs(what, expected, actual[:200], subject)


def check_reference(reference: str, signed: SignedTool) -> None:
    """The task's ``dockerPull``/``dockerImageId`` must name the signed image: its digest, its
    image id, or its name with a tag (the tag itself is never used: the worker runs by digest)."""
    ref = reference.strip()
    if ref.startswith("sha256:"):
        ok = ref == signed.config_digest
    else:
        named, _, digest = ref.partition("@")
        last = named.rsplit("/", 1)[-1]
        name = named.rsplit(":", 1)[0] if ":" in last else named  # without its tag
        ok = name == signed.image_name and (not digest or digest == signed.image_digest)
    if not ok:
        raise IntegrityError(
            f"image {ref[:200]} is not the image signed for {signed.tool_id}:{signed.version_id} "
            f"(signed: {signed.pinned_ref})",
            subject=ref[:200],
            expected=signed.pinned_ref,
            actual=ref[:200],
        )


def check_local_image(local_id: str, signed: SignedTool) -> None:
    """The engine's image id (sha256 of the config, which pins the layers) is the signed one."""
    if not hmac.compare_digest(local_id.encode(), signed.config_digest.encode()):
        raise _differs("local image id", signed.config_digest, local_id[:200], signed.pinned_ref)


def check_descriptors(files: Mapping[str, bytes], signed: SignedTool, *, primary: str | None = None) -> None:
    """Each descriptor's path obeys the path rule and is in the statement; the sha256 of its
    bytes (hashed here) equals the signed checksum; the primary descriptor is one of them."""
    subject = f"{signed.tool_id}:{signed.version_id}"
    for path, content in files.items():
        try:
            check_relative_path(path, "descriptor path")
        except BadRequest as exc:
            raise IntegrityError(
                f"descriptor of {subject}: {exc.message}",
                subject=path[:200],
                expected="a relative path",
                actual=path[:200],
            ) from None
        expected = signed.descriptor_checksums.get(path)
        if expected is None:
            raise IntegrityError(
                f"descriptor {path[:200]!r} of {subject} is not in the signed statement "
                f"(signed files: {', '.join(sorted(signed.descriptor_checksums))[:300]})",
                subject=path[:200],
                expected="a signed descriptor path",
                actual=path[:200],
            )
        actual = hashlib.sha256(content).hexdigest()
        if not hmac.compare_digest(expected, actual):
            raise _differs(f"sha256 of descriptor {path[:200]}", expected, actual, subject)
    if primary is not None and primary not in files:
        raise IntegrityError(
            f"primary descriptor {primary[:200]!r} of {subject} is not among the verified files",
            subject=primary[:200],
        )


def hash_input_file(path: str, what: str, copy_to: str | None = None) -> str:
    """SHA-256 of the regular, single-link file at ``path`` (never through a symlink or a hard
    link), copying it to ``copy_to`` (created exclusively, never followed) while hashing."""
    fd = open_regular_nofollow(path, what)
    sha = hashlib.sha256()
    out = -1
    try:
        if copy_to is not None:
            out = os.open(copy_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            if out >= 0:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
    finally:
        os.close(fd)
        if out >= 0:
            os.close(out)
    return sha.hexdigest()


def check_input(what: str, expected: str, actual: str, source: str) -> None:
    """An input's staged bytes against the checksum of the exact record that feeds it."""
    if not hmac.compare_digest(expected, actual):
        raise IntegrityError(
            f"sha256 mismatch for {what} ({source}): expected {expected}, got {actual}",
            subject=what,
            expected=expected,
            actual=actual,
        )


def check_recorded_files(records: Iterable[tuple[str, str, str]]) -> None:
    """Every file the run recorded, as ``(path, sha256, source)``, is still the regular,
    single-link file with the recorded bytes.

    Used when the engine stopped short of asking for a task: the sandboxed engine cannot read
    through a link planted between tasks, so it fails before the gate sees the input. The
    worker then names the tampered file itself instead of reporting a bare engine failure.
    A file that is gone is left to the engine's own message (nothing was read from it).
    """
    for path, expected, source in records:
        try:
            os.lstat(path)
        except FileNotFoundError:
            continue
        what = f"recorded file {os.path.basename(path)[:200]} ({source[:200]})"
        check_input(what, expected, hash_input_file(path, what), source[:200])



# ---------------------------------------------------------------- the gate as a unit
class GateRefusal(HelixGateError):
    """The verification gate refused a task (wraps the precise integrity error)."""

    status = 422
    image: VerifiedImage | None = None  # set when the image had verified before an input was refused


@dataclass(frozen=True)
class Recorded:
    sha256: str
    task_id: str | None  # None for external (DRS) inputs and attachments
    source: str  # drs URI, attachment path or producing task


class ChecksumRegistry:
    """Path -> the checksum its producer recorded (DRS object, attachment or the task whose
    output it is), shared by the tasks of one run."""

    def __init__(self) -> None:
        self._items: dict[str, Recorded] = {}
        self._lock = threading.Lock()

    # Keyed by the exact (absolute, normalized) path the producer wrote: never by realpath,
    # so a symlink planted at a path cannot borrow the record of the file it points to.
    def record(self, path: str, rec: Recorded) -> None:
        with self._lock:
            self._items[os.path.abspath(path)] = rec

    def get(self, path: str) -> Recorded | None:
        with self._lock:
            return self._items.get(os.path.abspath(path))

    def items(self) -> list[tuple[str, Recorded]]:
        with self._lock:
            return list(self._items.items())


@dataclass(frozen=True)
class VerifiedImage:
    image_id: str  # sha256:<config digest>, what the engine shows
    pinned_ref: str  # name@sha256:<manifest digest> or sha256:<id>
    tool_id: str
    version_id: str
    signer: str


@dataclass(frozen=True)
class TaskInput:
    """One staged input as the engine declared it: ``origin`` is the local path it was
    declared at (before any symlink was followed), ``target`` its path in the container."""

    kind: str  # "File" or "Directory"
    origin: str
    target: str


@dataclass(frozen=True)
class CheckedInput:
    path: str  # in the container
    sha256: str  # of the staged bytes, hashed while staging
    source: str  # the record that vouched for it
    expected: str = ""  # the checksum that record holds (equal to sha256, or the task was refused)

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "expected": self.expected, "source": self.source}


@dataclass(frozen=True)
class StagedInputs:
    mounts: tuple[tuple[str, str], ...]  # (host path, container path), read-only
    checked: tuple[CheckedInput, ...]


@dataclass(frozen=True)
class Admission:
    """What the gate let through: the verified image and the staged, checked inputs."""

    image: VerifiedImage
    inputs: StagedInputs


class SignedVersionSource(Protocol):
    """Which signed version covers an image, and a version's verified facts
    (``wes_server.tools.SignedVersions`` over the tool port)."""

    def image_pin(self, reference: str, prefer: tuple[str, str] | None = None) -> ImagePin: ...

    def signed_version(self, tool_id: str, version_id: str) -> SignedTool: ...


class ImageInspector(Protocol):
    """The local container engine: make the image with this id present (pulling only by
    digest) and return the id the engine reports for it."""

    def ensure_image(self, pinned_ref: str, expected_image_id: str) -> str: ...


class RefusalSink(Protocol):
    """Where a refused task is reported (security event, run log, the run stops)."""

    def refused(self, exc: IntegrityError, task_id: str) -> None: ...


class TaskGate:
    """The verification gate of one run's tasks."""

    def __init__(
        self,
        *,
        tools: SignedVersionSource,
        images: ImageInspector,
        registry: ChecksumRegistry,
        sink: RefusalSink,
    ) -> None:
        self.tools = tools
        self.images = images
        self.registry = registry
        self.sink = sink

    # ------------------------------------------------------------ phases
    def signature(self, reference: str, prefer: tuple[str, str] | None = None) -> tuple[ImagePin, SignedTool]:
        """Phase 1: the signed version covering ``reference`` (only ``prefer`` when the run
        executes that version), verified from its own bundle."""
        if not reference:
            raise VerificationError("the task names no container image", subject="DockerRequirement")
        pin = self.tools.image_pin(reference, prefer)  # untrusted: compared in phase 2
        signed = self.tools.signed_version(*(prefer or (pin.tool_id, pin.version_id)))
        return pin, signed

    @staticmethod
    def digests(reference: str, pin: ImagePin, signed: SignedTool) -> None:
        """Phase 2: the task's image reference and TRS's recorded pin equal what is signed."""
        check_reference(reference, signed)
        check_pin(pin, signed)

    def local_image(self, signed: SignedTool) -> VerifiedImage:
        """Phase 3: the engine's image id is the signed configuration digest."""
        local_id = self.images.ensure_image(signed.pinned_ref, signed.config_digest)
        check_local_image(local_id, signed)
        return VerifiedImage(local_id, signed.pinned_ref, signed.tool_id, signed.version_id, signed.signer)

    def image(self, reference: str, prefer: tuple[str, str] | None = None) -> VerifiedImage:
        """Phases 1-3; any failure to establish them is an integrity failure of the image."""
        try:
            pin, signed = self.signature(reference, prefer)
            self.digests(reference, pin, signed)
            return self.local_image(signed)
        except IntegrityError:
            raise
        except HelixGateError as exc:  # TRS unreachable, no such version, engine refused...
            raise IntegrityError(f"image {reference}: {exc.message}", subject=reference) from None

    def stage_inputs(self, inputs: Sequence[TaskInput], inputs_dir: Path) -> StagedInputs:
        """Phase 4: every input file copied into ``inputs_dir`` while hashed, each compared
        with the record of the exact path that feeds it; the staged tree is made read-only."""
        inputs_dir.mkdir(parents=True, exist_ok=True)
        mounts: list[tuple[str, str]] = []
        checked: list[CheckedInput] = []
        for n, entry in enumerate(inputs, start=1):
            host_root = inputs_dir / f"{n:04d}"
            for src, rel in input_files(entry.kind, entry.origin):
                actual, rec = stage_input(self.registry, src, host_root / (rel or os.path.basename(entry.target)))
                path = entry.target if not rel else os.path.join(entry.target, rel)
                checked.append(CheckedInput(path, actual, rec.source, rec.sha256))
            target_host = host_root / os.path.basename(entry.target) if entry.kind == "File" else host_root
            mounts.append((str(target_host), entry.target))
        for root, dirs, _ in os.walk(inputs_dir):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o555)
        os.chmod(inputs_dir, 0o555)
        return StagedInputs(tuple(mounts), tuple(checked))

    # ------------------------------------------------------------ the whole gate
    def admit(
        self,
        task_id: str,
        reference: str,
        prefer: tuple[str, str] | None,
        inputs: Sequence[TaskInput],
        inputs_dir: Path,
    ) -> Admission:
        """Every phase, in order; the first failure is reported and refuses the task."""
        image: VerifiedImage | None = None
        try:
            image = self.image(reference, prefer)
            staged = self.stage_inputs(inputs, inputs_dir)
        except IntegrityError as exc:
            refusal = self.refuse(task_id, exc)
            refusal.image = image  # the evidence says what had verified before the refusal
            raise refusal from None
        return Admission(image, staged)

    def refuse(self, task_id: str, exc: IntegrityError) -> GateRefusal:
        """Report ``exc`` and return the refusal that stops the task."""
        self.sink.refused(exc, task_id)
        # details keep what differed (subject, expected, actual) for the task's evidence
        return GateRefusal(f"task {task_id} refused before start: {exc.message}", details=dict(exc.details))


def input_files(kind: str, resolved: str) -> list[tuple[str, str]]:
    """(path, path relative to the Directory) of every file feeding one input; a Directory is
    walked file by file, and a symlinked sub-directory is refused rather than skipped."""
    if kind == "File":
        return [(resolved, "")]
    out: list[tuple[str, str]] = []
    for root, dirs, names in os.walk(resolved):
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                where = os.path.join(root, d)
                raise IntegrityError(
                    f"input directory entry {where} is a symbolic link: refusing to read through it",
                    subject=where,
                    expected="a plain directory",
                    actual="a symbolic link",
                )
        out.extend((os.path.join(root, f), os.path.relpath(os.path.join(root, f), resolved)) for f in names)
    return out


def stage_input(registry: ChecksumRegistry, src: str, dst: Path) -> tuple[str, Recorded]:
    """Copy one input file into the task's staging directory while hashing it, and compare
    the hash with the record of the exact path that feeds it (the producing task's output,
    the DRS object or the attachment): never through a symlink or a hard link."""
    rec = registry.get(src)
    if rec is None:
        raise IntegrityError(
            f"input {src} has no recorded producer (no DRS object, attachment or task output wrote it); "
            "refusing to use it",
            subject=src,
            expected="a file recorded by its producer",
            actual="unknown file",
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    what = f"input {os.path.basename(src)} ({rec.source})"
    actual = hash_input_file(src, what, copy_to=str(dst))
    check_input(f"input {os.path.basename(src)}", rec.sha256, actual, rec.source)
    os.chmod(dst, 0o444)
    return actual, rec
