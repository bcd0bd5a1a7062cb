"""The verification gate as a unit (``wes_server.gate.TaskGate``), phase by phase, without
Docker, TRS or DRS: a fake tool port serving real bundles signed by a registry key, a fake
image inspector, a real checksum registry over temporary files and a recording refusal sink.
Each refusal names what differed: expected vs actual, which input, which policy."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helixgate.config import load_settings
from helixgate.errors import IntegrityError, NotFound, VerificationError
from helixgate.ports import DescriptorFile, ImagePin, TrustMaterial
from helixgate.signing import KeySigner, ToolVersionClaim
from wes_server.gate import ChecksumRegistry, GateRefusal, Recorded, TaskGate, TaskInput
from wes_server.tools import SignedVersions

IMAGE = "127.0.0.1:5000/lab/tool"
MANIFEST = "sha256:" + "aa" * 32
CONFIG = "sha256:" + "cc" * 32
OTHER = "sha256:" + "dd" * 32
CWL = b"cwlVersion: v1.2\n"
TOOL = ("lab.tool", "1.0.0")


def claim(version_id: str = "1.0.0", **overrides: str) -> ToolVersionClaim:
    fields: dict[str, object] = {
        "tool_id": "lab.tool",
        "version_id": version_id,
        "image_name": IMAGE,
        "image_digest": MANIFEST,
        "digest_kind": "manifest",
        "descriptor_checksums": {"wf.cwl": hashlib.sha256(CWL).hexdigest()},
        "config_digest": CONFIG,
    }
    fields.update(overrides)
    return ToolVersionClaim(**fields)  # type: ignore[arg-type]


def pin(version_id: str = "1.0.0", **overrides: str) -> ImagePin:
    fields = {
        "tool_id": "lab.tool",
        "version_id": version_id,
        "pinned_ref": f"{IMAGE}@{MANIFEST}",
        "image_id": CONFIG,
        "signed_digest": MANIFEST,
        "digest_kind": "manifest",
    }
    fields.update(overrides)
    return ImagePin(**fields)


@dataclass
class FakeToolPort:
    """A ``ToolPort`` serving fixed answers (what TRS's tables would say)."""

    trust: TrustMaterial
    bundles: dict[tuple[str, str], str] = field(default_factory=dict)
    pins: dict[str, list[ImagePin]] = field(default_factory=dict)
    fail_with: Exception | None = None

    def descriptors(self, tool_id: str, version_id: str, language: str = "CWL") -> list[DescriptorFile]:
        return []

    def bundle(self, tool_id: str, version_id: str) -> str:
        return self.bundles.get((tool_id, version_id), "")

    def trust_material(self) -> TrustMaterial:
        return self.trust

    def image_pins(self, reference: str) -> list[ImagePin]:
        if self.fail_with is not None:
            raise self.fail_with
        return self.pins.get(reference, [])


@dataclass
class FakeImages:
    """The container engine's answer for the local image id."""

    local_id: str = CONFIG
    calls: list[tuple[str, str]] = field(default_factory=list)

    def ensure_image(self, pinned_ref: str, expected_image_id: str) -> str:
        self.calls.append((pinned_ref, expected_image_id))
        return self.local_id


@dataclass
class Sink:
    refusals: list[tuple[IntegrityError, str]] = field(default_factory=list)

    def refused(self, exc: IntegrityError, task_id: str) -> None:
        self.refusals.append((exc, task_id))


@dataclass
class World:
    signer: KeySigner
    port: FakeToolPort
    images: FakeImages
    registry: ChecksumRegistry
    sink: Sink
    gate: TaskGate
    tmp: Path

    def sign(self, c: ToolVersionClaim) -> None:
        self.port.bundles[(c.tool_id, c.version_id)] = self.signer.sign(c)

    def recorded(self, name: str, content: bytes, source: str = "drs://h/obj", sha: str | None = None) -> str:
        path = self.tmp / "run" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.registry.record(str(path), Recorded(sha or hashlib.sha256(content).hexdigest(), None, source))
        return str(path)


@pytest.fixture()
def world(tmp_path: Path) -> World:
    signer = KeySigner(tmp_path / "signing")
    port = FakeToolPort(TrustMaterial.from_json(signer.trust_material()))
    port.pins[f"{IMAGE}:1.0"] = [pin()]
    tools = SignedVersions(port, load_settings(env={}, data_dir=str(tmp_path / "data")))
    images, registry, sink = FakeImages(), ChecksumRegistry(), Sink()
    w = World(
        signer,
        port,
        images,
        registry,
        sink,
        TaskGate(tools=tools, images=images, registry=registry, sink=sink),
        tmp_path,
    )
    w.sign(claim())
    return w


# ---------------------------------------------------------------- phase 1: signature
def test_signature_phase_returns_the_pin_and_the_facts_of_the_versions_own_statement(world: World) -> None:
    found, signed = world.gate.signature(f"{IMAGE}:1.0")
    assert found == pin()
    assert (signed.tool_id, signed.version_id, signed.config_digest, signed.pinned_ref) == (
        *TOOL,
        CONFIG,
        f"{IMAGE}@{MANIFEST}",
    )
    assert signed.signer.startswith("registry key ")


def test_signature_phase_refuses_an_unsigned_version(world: World) -> None:
    world.port.bundles.clear()
    with pytest.raises(VerificationError) as info:
        world.gate.signature(f"{IMAGE}:1.0")
    assert "lab.tool:1.0.0 has no signature of its own" in info.value.message
    assert (info.value.expected, info.value.actual) == ("a signature bundle", "none")


def test_signature_phase_refuses_a_bundle_signed_by_an_untrusted_key(world: World, tmp_path: Path) -> None:
    world.port.bundles[TOOL] = KeySigner(tmp_path / "other-key").sign(claim())
    with pytest.raises(VerificationError, match="unknown key"):
        world.gate.signature(f"{IMAGE}:1.0")


def test_signature_phase_refuses_another_versions_bundle(world: World) -> None:
    world.port.bundles[TOOL] = world.signer.sign(claim("2.0.0"))
    with pytest.raises(VerificationError, match="versionId does not match"):
        world.gate.signature(f"{IMAGE}:1.0")


def test_signature_phase_policy_unsigned_ambiguous_and_other_version(world: World) -> None:
    with pytest.raises(VerificationError, match="names no container image"):
        world.gate.signature("")
    with pytest.raises(VerificationError, match="not the signed image of any TRS tool version"):
        world.gate.signature(f"{IMAGE}:unknown")
    world.port.pins[f"{IMAGE}:1.0"] = [pin(), pin("2.0.0", signed_digest=OTHER)]
    with pytest.raises(VerificationError, match="different signed digests in several TRS versions"):
        world.gate.signature(f"{IMAGE}:1.0")
    # a run from a TRS version accepts only that version's own pin
    world.port.pins[f"{IMAGE}:1.0"] = [pin("2.0.0")]
    with pytest.raises(VerificationError) as info:
        world.gate.signature(f"{IMAGE}:1.0", prefer=TOOL)
    assert (info.value.expected, info.value.actual) == ("lab.tool:1.0.0", "lab.tool:2.0.0")


# ---------------------------------------------------------------- phase 2: digests and pin
def test_digest_phase_compares_reference_and_pin_with_the_statement(world: World) -> None:
    found, signed = world.gate.signature(f"{IMAGE}:1.0")
    world.gate.digests(f"{IMAGE}:1.0", found, signed)
    world.gate.digests(f"{IMAGE}@{MANIFEST}", found, signed)
    with pytest.raises(IntegrityError) as info:
        world.gate.digests(f"{IMAGE}@{OTHER}", found, signed)
    assert (info.value.expected, info.value.actual) == (f"{IMAGE}@{MANIFEST}", f"{IMAGE}@{OTHER}")
    with pytest.raises(IntegrityError) as info:
        world.gate.digests(f"{IMAGE}:1.0", pin(image_id=OTHER), signed)
    assert "image configuration digest recorded in TRS differs from the signed statement" in info.value.message
    assert (info.value.expected, info.value.actual) == (CONFIG, OTHER)


# ---------------------------------------------------------------- phase 3: local image
def test_local_image_phase_requires_the_engine_id_to_be_the_signed_config_digest(world: World) -> None:
    _, signed = world.gate.signature(f"{IMAGE}:1.0")
    image = world.gate.local_image(signed)
    assert (image.image_id, image.pinned_ref) == (CONFIG, f"{IMAGE}@{MANIFEST}")
    assert world.images.calls == [(f"{IMAGE}@{MANIFEST}", CONFIG)]  # pulled by digest, never by tag
    world.images.local_id = OTHER
    with pytest.raises(IntegrityError) as info:
        world.gate.local_image(signed)
    assert info.value.message == f"local image id differs from the signed statement: expected {CONFIG}, got {OTHER}"


# ---------------------------------------------------------------- phase 4: inputs
def test_input_phase_stages_read_only_copies_checked_against_their_record(world: World) -> None:
    src = world.recorded("in.txt", b"alpha\n", source="drs://h/abc")
    staged = world.gate.stage_inputs([TaskInput("File", src, "/var/lib/cwl/in.txt")], world.tmp / "stage")
    ((host, target),) = staged.mounts
    assert target == "/var/lib/cwl/in.txt" and Path(host).read_bytes() == b"alpha\n"
    assert not os.stat(host).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert [c.as_json() for c in staged.checked] == [
        {
            "path": "/var/lib/cwl/in.txt",
            "sha256": hashlib.sha256(b"alpha\n").hexdigest(),
            "expected": hashlib.sha256(b"alpha\n").hexdigest(),  # the record's checksum, shown as evidence
            "source": "drs://h/abc",
        }
    ]


def test_input_phase_refuses_bytes_that_differ_from_the_record(world: World) -> None:
    recorded = hashlib.sha256(b"alpha\n").hexdigest()
    src = world.recorded("in.txt", b"FORGED\n", source="task 001-a", sha=recorded)
    with pytest.raises(IntegrityError) as info:
        world.gate.stage_inputs([TaskInput("File", src, "/var/lib/cwl/in.txt")], world.tmp / "stage")
    actual = hashlib.sha256(b"FORGED\n").hexdigest()
    assert info.value.message == f"sha256 mismatch for input in.txt (task 001-a): expected {recorded}, got {actual}"
    assert (info.value.expected, info.value.actual) == (recorded, actual)


def test_input_phase_refuses_unrecorded_files_and_links(world: World) -> None:
    stray = world.tmp / "run" / "stray.txt"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    with pytest.raises(IntegrityError) as info:
        world.gate.stage_inputs([TaskInput("File", str(stray), "/in")], world.tmp / "s1")
    assert "has no recorded producer" in info.value.message
    assert (info.value.expected, info.value.actual) == ("a file recorded by its producer", "unknown file")
    # a link planted at a recorded path never borrows the record of what it points to
    src = world.recorded("in.txt", b"alpha\n")
    os.unlink(src)
    os.symlink(stray, src)
    with pytest.raises(IntegrityError, match="symbolic link"):
        world.gate.stage_inputs([TaskInput("File", src, "/in")], world.tmp / "s2")


def test_input_phase_walks_directories_and_refuses_a_symlinked_subdirectory(world: World) -> None:
    world.recorded("dir/a.txt", b"a")
    world.recorded("dir/sub/b.txt", b"b")
    staged = world.gate.stage_inputs([TaskInput("Directory", str(world.tmp / "run" / "dir"), "/d")], world.tmp / "s1")
    assert sorted(c.path for c in staged.checked) == ["/d/a.txt", "/d/sub/b.txt"]
    os.symlink(world.tmp / "run" / "dir" / "sub", world.tmp / "run" / "dir" / "link")
    with pytest.raises(IntegrityError) as info:
        world.gate.stage_inputs([TaskInput("Directory", str(world.tmp / "run" / "dir"), "/d")], world.tmp / "s2")
    assert (info.value.expected, info.value.actual) == ("a plain directory", "a symbolic link")


# ---------------------------------------------------------------- the whole gate
def test_admit_runs_every_phase_and_reports_nothing_when_all_pass(world: World) -> None:
    src = world.recorded("in.txt", b"alpha\n")
    admitted = world.gate.admit("001-t", f"{IMAGE}:1.0", TOOL, [TaskInput("File", src, "/in")], world.tmp / "s")
    assert admitted.image.image_id == CONFIG and len(admitted.inputs.checked) == 1
    assert world.sink.refusals == []


def test_admit_reports_the_first_failure_once_and_stages_nothing_after_an_image_failure(world: World) -> None:
    src = world.recorded("in.txt", b"alpha\n")
    world.images.local_id = OTHER
    with pytest.raises(GateRefusal) as info:
        world.gate.admit("001-t", f"{IMAGE}:1.0", None, [TaskInput("File", src, "/in")], world.tmp / "s")
    assert info.value.message.startswith("task 001-t refused before start: local image id differs")
    ((exc, task_id),) = world.sink.refusals
    assert task_id == "001-t" and (exc.expected, exc.actual) == (CONFIG, OTHER)
    # the refusal keeps what differed, for the task's evidence
    assert info.value.details == {"subject": f"{IMAGE}@{MANIFEST}", "expected": CONFIG, "actual": OTHER}
    assert not (world.tmp / "s").exists()  # no input was read for a refused image


def test_admit_turns_an_unreachable_registry_into_an_integrity_refusal_of_the_image(world: World) -> None:
    world.port.fail_with = NotFound("no such tool")
    with pytest.raises(GateRefusal):
        world.gate.admit("002-t", f"{IMAGE}:1.0", None, [], world.tmp / "s")
    ((exc, _),) = world.sink.refusals
    assert isinstance(exc, IntegrityError) and exc.message == f"image {IMAGE}:1.0: no such tool"
    assert world.images.calls == []


def test_trust_material_and_bundles_are_fetched_again_only_after_a_minute(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    port = world.port
    original_trust, original_bundle = port.trust_material, port.bundle
    monkeypatch.setattr(port, "trust_material", lambda: calls.append("trust") or original_trust())
    monkeypatch.setattr(port, "bundle", lambda t, v: calls.append("bundle") or original_bundle(t, v))
    now = [1000.0]
    monkeypatch.setattr("wes_server.tools.time.monotonic", lambda: now[0])
    world.gate.signature(f"{IMAGE}:1.0")
    world.gate.signature(f"{IMAGE}:1.0")
    assert calls == ["bundle", "trust"]
    now[0] += 61  # a revoked key stops verifying within a minute
    world.gate.signature(f"{IMAGE}:1.0")
    assert calls == ["bundle", "trust", "bundle", "trust"]


def test_a_refused_input_keeps_the_verified_image_and_what_differed_for_the_evidence(world: World) -> None:
    recorded = hashlib.sha256(b"alpha\n").hexdigest()
    src = world.recorded("in.txt", b"FORGED\n", source="task 001-a", sha=recorded)
    with pytest.raises(GateRefusal) as info:
        world.gate.admit("002-t", f"{IMAGE}:1.0", TOOL, [TaskInput("File", src, "/in")], world.tmp / "s")
    assert info.value.image is not None and info.value.image.image_id == CONFIG
    assert info.value.details["expected"] == recorded
    assert info.value.details["actual"] == hashlib.sha256(b"FORGED\n").hexdigest()
    with pytest.raises(GateRefusal) as info:  # an image refusal: nothing had verified
        world.images.local_id = OTHER
        world.gate.admit("003-t", f"{IMAGE}:1.0", TOOL, [], world.tmp / "s2")
    assert info.value.image is None
