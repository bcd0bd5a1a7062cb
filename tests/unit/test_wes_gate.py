"""The gate's plain functions: every fact read from tables or HTTP is compared with the
verified statement, and each refusal names expected vs actual."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from helixgate.errors import IntegrityError, VerificationError
from helixgate.ports import ImagePin
from helixgate.signing import KeySigner, ToolVersionClaim
from wes_server import gate

MANIFEST = "sha256:" + "aa" * 32
CONFIG = "sha256:" + "cc" * 32
OTHER = "sha256:" + "dd" * 32
CWL = b"cwlVersion: v1.2\n"


def signed(**overrides: object) -> gate.SignedTool:
    fields: dict[str, object] = {
        "tool_id": "lab.tool",
        "version_id": "1.0.0",
        "image_name": "127.0.0.1:5000/lab/tool",
        "image_digest": MANIFEST,
        "digest_kind": "manifest",
        "config_digest": CONFIG,
        "descriptor_checksums": {"wf.cwl": hashlib.sha256(CWL).hexdigest()},
        "signer": "registry key k",
        "predicate_type": "v2",
    }
    fields.update(overrides)
    return gate.SignedTool(**fields)  # type: ignore[arg-type]


def pin(**overrides: str) -> ImagePin:
    p = {
        "tool_id": "lab.tool",
        "version_id": "1.0.0",
        "signed_digest": MANIFEST,
        "digest_kind": "manifest",
        "image_id": CONFIG,
        "pinned_ref": f"127.0.0.1:5000/lab/tool@{MANIFEST}",
    }
    p.update(overrides)
    return ImagePin(**p)


def test_matching_pin_passes_and_each_edited_field_is_refused_with_expected_and_actual() -> None:
    gate.check_pin(pin(), signed())
    for field, value in [
        ("image_id", OTHER),
        ("signed_digest", OTHER),
        ("version_id", "2.0.0"),
        ("pinned_ref", f"127.0.0.1:5000/lab/evil@{MANIFEST}"),
    ]:
        with pytest.raises(IntegrityError, match="differs from the signed statement") as info:
            gate.check_pin(pin(**{field: value}), signed())
        assert info.value.actual == value


def test_reference_must_name_the_signed_image() -> None:
    s = signed()
    gate.check_reference("127.0.0.1:5000/lab/tool:1.0", s)
    gate.check_reference(f"127.0.0.1:5000/lab/tool@{MANIFEST}", s)
    gate.check_reference(CONFIG, s)
    gate.check_reference(f"127.0.0.1:5000/lab/tool:1.0@{MANIFEST}", s)
    for bad in (
        "127.0.0.1:5000/lab/evil:1.0",
        f"127.0.0.1:5000/lab/tool@{OTHER}",
        f"127.0.0.1:5000/lab/tool:1.0@{OTHER}",
        OTHER,
    ):
        with pytest.raises(IntegrityError, match="is not the image signed"):
            gate.check_reference(bad, s)


def test_local_image_id_must_be_the_signed_config_digest() -> None:
    gate.check_local_image(CONFIG, signed())
    with pytest.raises(IntegrityError, match=f"expected {CONFIG}, got {OTHER}"):
        gate.check_local_image(OTHER, signed())


def test_descriptors_are_hashed_against_the_statement() -> None:
    gate.check_descriptors({"wf.cwl": CWL}, signed(), primary="wf.cwl")
    with pytest.raises(IntegrityError, match="sha256 of descriptor wf.cwl differs"):
        gate.check_descriptors({"wf.cwl": CWL + b"evil"}, signed())
    with pytest.raises(IntegrityError, match="not in the signed statement"):
        gate.check_descriptors({"other.cwl": CWL}, signed())
    with pytest.raises(IntegrityError, match="leaves its directory"):
        gate.check_descriptors({"../wf.cwl": CWL}, signed())


def test_signed_tool_needs_the_versions_own_bundle(tmp_path: Path) -> None:
    signer = KeySigner(tmp_path / "signing")
    claim = ToolVersionClaim(
        tool_id="lab.tool",
        version_id="1.0.0",
        image_name="127.0.0.1:5000/lab/tool",
        image_digest=MANIFEST,
        digest_kind="manifest",
        descriptor_checksums={"wf.cwl": hashlib.sha256(CWL).hexdigest()},
        config_digest=CONFIG,
    )
    bundle = signer.sign(claim)
    facts = gate.signed_tool(bundle, policy=signer.policy(), tool_id="lab.tool", version_id="1.0.0")
    assert (facts.config_digest, facts.pinned_ref) == (CONFIG, f"127.0.0.1:5000/lab/tool@{MANIFEST}")
    with pytest.raises(VerificationError, match="versionId does not match"):
        gate.signed_tool(bundle, policy=signer.policy(), tool_id="lab.tool", version_id="2.0.0")
    with pytest.raises(VerificationError, match="no signature of its own"):
        gate.signed_tool("", policy=signer.policy(), tool_id="lab.tool", version_id="1.0.0")
    legacy = signer.sign(ToolVersionClaim(**{**claim.__dict__, "config_digest": ""}))
    with pytest.raises(VerificationError, match="does not sign the image configuration digest"):
        gate.signed_tool(legacy, policy=signer.policy(), tool_id="lab.tool", version_id="1.0.0")


def test_input_hashing_refuses_links(tmp_path: Path) -> None:
    real = tmp_path / "out.txt"
    real.write_bytes(b"data")
    copy = tmp_path / "copy.txt"
    assert gate.hash_input_file(str(real), "out.txt", copy_to=str(copy)) == hashlib.sha256(b"data").hexdigest()
    assert copy.read_bytes() == b"data"
    (tmp_path / "sym").symlink_to(real)
    with pytest.raises(IntegrityError, match="symbolic link"):
        gate.hash_input_file(str(tmp_path / "sym"), "sym")
    os.link(real, tmp_path / "hard")
    with pytest.raises(IntegrityError, match="hard link"):
        gate.hash_input_file(str(tmp_path / "hard"), "hard")


def test_recorded_files_check_names_a_replaced_intermediate(tmp_path: Path) -> None:
    out = tmp_path / "a.txt"
    out.write_bytes(b"alpha\n")
    digest = hashlib.sha256(b"alpha\n").hexdigest()
    records = [(str(out), digest, "task 001-a"), (str(tmp_path / "gone.txt"), digest, "task 002-b")]
    gate.check_recorded_files(records)  # intact, and a removed file is left to the engine's message

    forged = tmp_path / "forged.txt"
    forged.write_bytes(b"FORGED\n")
    for kind in ("symlink", "hardlink", "bytes"):
        out.unlink()
        if kind == "symlink":
            out.symlink_to(forged)
        elif kind == "hardlink":
            os.link(forged, out)
        else:
            out.write_bytes(b"FORGED\n")
        with pytest.raises(IntegrityError) as info:
            gate.check_recorded_files(records)
        text = info.value.message
        assert "a.txt" in text and "task 001-a" in text, text
        expected = {"symlink": "symbolic link", "hardlink": "hard link", "bytes": digest}[kind]
        assert expected in text, text
