"""`helixgate tool ...` (tool developers) against a real `helixgate serve`, the test registry and the
engine: publish pins, checksums and signs; show; verify re-checks everything on the client, and the
verification helper refuses a swapped bundle, tampered content and foreign trust material."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from helixgate.errors import IntegrityError, VerificationError
from helixgate.sdk import HelixGate, verify_tool_version
from helixgate.signing import KeySigner
from helixgate_app.demo_assets import workflow_files
from tests.fixtures.docker_images import PushedImage, session_scope
from tests.fixtures.live import LiveServer
from tests.integration.test_cli_data import as_json, closed_url, one_line_error

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Dev:
    server: LiveServer
    token: str
    tool_id: str
    workflow_dir: Path
    image: PushedImage

    @property
    def tag_ref(self) -> str:
        return f"{self.image.repository}:{self.image.tag}"

    def publish(self, version: str, *extra: str) -> Any:
        files = [
            a for name in ("upper.cwl", "sort.cwl", "count.cwl") for a in ("--file", str(self.workflow_dir / name))
        ]
        return self.server.cli(
            "tool", "publish", self.tool_id, version, "--image", self.tag_ref,
            "--descriptor", str(self.workflow_dir / "workflow.cwl"), *files, *extra, token=self.token,
        )  # fmt: skip


@pytest.fixture()
def dev(
    live_server_factory: Callable[..., LiveServer], pushed_busybox: PushedImage, test_session_id: str, tmp_path: Path
) -> Dev:
    server = live_server_factory(extra_env={"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)})
    token = server.user("dev", "tool-developer")
    wf = tmp_path / "wf"
    wf.mkdir()
    for name, content in workflow_files(f"{pushed_busybox.repository}:{pushed_busybox.tag}").items():
        (wf / name).write_text(content)
    tool = as_json(server.cli("tool", "create", "helixgate-test", f"textkit-{test_session_id}", "--json", token=token))
    return Dev(server, token, tool["id"], wf, pushed_busybox)


def test_publish_show_verify(dev: Dev, tmp_path: Path) -> None:
    r = dev.publish("1.0.0")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # the pinned image, its digests, each file's sha256 and the signer
    assert dev.image.pinned_ref in out and dev.image.digest in out and dev.image.image_id in out
    for name in ("workflow.cwl", "upper.cwl", "sort.cwl", "count.cwl"):
        assert hashlib.sha256((dev.workflow_dir / name).read_bytes()).hexdigest() in out
    assert "signed: yes by registry key" in out, out

    record = as_json(dev.publish("1.0.1", "--json"))
    assert record["version_id"] == "1.0.1" and record["signature"]["signed"] is True
    primary = record["images"][0]
    assert primary["image_name"] == dev.image.pinned_ref and primary["config_digest"] == dev.image.image_id
    assert {f["path"] for f in record["files"]} == {"workflow.cwl", "upper.cwl", "sort.cwl", "count.cwl"}

    shown = dev.server.cli("tool", "show", dev.tool_id, token=dev.token, check=True).stdout
    assert dev.tool_id in shown and "1.0.0" in shown and "1.0.1" in shown
    one = as_json(dev.server.cli("tool", "show", dev.tool_id, "1.0.0", "--json", token=dev.token))
    assert one["version_id"] == "1.0.0" and one["signature"]["subject_digest"] == dev.image.digest

    human = dev.server.cli("tool", "verify", dev.tool_id, "1.0.0", token=dev.token, check=True).stdout
    assert f"verified {dev.tool_id} 1.0.0" in human and "registry key" in human
    verified = as_json(dev.server.cli("tool", "verify", dev.tool_id, "1.0.0", "--json", token=dev.token))
    assert verified["verified"] is True and verified["subject_digest"] == dev.image.digest
    assert verified["files"]["upper.cwl"] == hashlib.sha256((dev.workflow_dir / "upper.cwl").read_bytes()).hexdigest()

    # pinned trust material verifies; someone else's keys do not
    trust = tmp_path / "trust.json"
    dev.server.cli("tool", "trust", "-o", str(trust), check=True)
    pinned = as_json(dev.server.cli("tool", "verify", dev.tool_id, "1.0.1", "--trust-material", str(trust), "--json"))
    assert pinned["trust"] == f"file {trust}"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(KeySigner(tmp_path / "other-keys", passphrase=b"x" * 16).trust_material()))
    line = one_line_error(
        dev.server.cli("tool", "verify", dev.tool_id, "1.0.0", "--trust-material", str(foreign)), "FAILED"
    )
    assert "unknown key" in line


def test_verify_helper_refuses_swapped_bundle_and_tampered_content(dev: Dev) -> None:
    for version in ("1.0.0", "1.0.1"):
        assert dev.publish(version).returncode == 0
    hg = HelixGate.connect(dev.server.url, dev.token)
    trust = hg.trust_material()
    record = hg.version_record(dev.tool_id, "1.0.0", content=True)
    bundle_v1 = hg.version_bundle(dev.tool_id, "1.0.0")
    bundle_v2 = hg.version_bundle(dev.tool_id, "1.0.1")
    assert verify_tool_version(record, bundle_v1, trust).version_id == "1.0.0"

    # a genuine bundle of another version of the same image: the signed version id gives it away
    with pytest.raises(VerificationError) as info:
        verify_tool_version(record, bundle_v2, trust)
    assert "versionId" in info.value.message and "1.0.0" in info.value.message and "1.0.1" in info.value.message

    # served content that does not match its recorded checksum
    tampered = copy.deepcopy(record)
    upper = next(f for f in tampered["files"] if f["path"] == "upper.cwl")
    upper["content"] = upper["content"].replace("tr a-z A-Z", "rm -rf /x")
    with pytest.raises(IntegrityError) as info2:
        verify_tool_version(tampered, bundle_v1, trust)
    assert "upper.cwl (recorded checksum)" in info2.value.message

    # content and recorded checksum both replaced: the signature still holds the original
    upper["checksum"]["checksum"] = hashlib.sha256(upper["content"].encode()).hexdigest()
    with pytest.raises(IntegrityError) as info3:
        verify_tool_version(tampered, bundle_v1, trust)
    assert "upper.cwl (signed checksum)" in info3.value.message

    # a file the signature does not cover, and a signed file left out
    extra = copy.deepcopy(record)
    extra["files"].append(
        {"path": "evil.cwl", "content": "x", "checksum": {"checksum": hashlib.sha256(b"x").hexdigest()}}
    )
    with pytest.raises(VerificationError, match="evil.cwl is not covered"):
        verify_tool_version(extra, bundle_v1, trust)
    fewer = copy.deepcopy(record)
    fewer["files"] = [f for f in fewer["files"] if f["path"] != "count.cwl"]
    with pytest.raises(VerificationError, match="count.cwl"):
        verify_tool_version(fewer, bundle_v1, trust)


def test_tool_errors_are_one_line(dev: Dev, tmp_path: Path) -> None:
    server = dev.server
    one_line_error(server.cli("tool", "create", "org", "x", token="not-a-token"), "401")
    r = dev.publish("2.0.0")
    assert r.returncode == 0, r.stderr
    one_line_error(dev.publish("2.0.0"), "409")  # versions are immutable
    bad = Dev(server, "not-a-token", dev.tool_id, dev.workflow_dir, dev.image)
    one_line_error(bad.publish("2.0.1"), "401")
    analyst = Dev(server, server.user("ann", "analyst"), dev.tool_id, dev.workflow_dir, dev.image)
    one_line_error(analyst.publish("2.0.1"), "403")
    one_line_error(server.cli("tool", "show", "no.such.tool", token=dev.token), "404")
    one_line_error(server.cli("tool", "show", dev.tool_id, "9.9.9", token=dev.token), "404")
    one_line_error(server.cli("tool", "verify", dev.tool_id, "9.9.9", token=dev.token), "404")
    outside = tmp_path / "outside.cwl"
    outside.write_text("cwlVersion: v1.2\n")
    one_line_error(
        server.cli(
            "tool", "publish", dev.tool_id, "2.0.2", "--image", dev.tag_ref,
            "--descriptor", str(dev.workflow_dir / "workflow.cwl"), "--file", str(outside), token=dev.token,
        ),
        "outside",
    )  # fmt: skip
    down = closed_url()
    one_line_error(server.cli("tool", "show", dev.tool_id, "--url", down), f"cannot reach {down}")
    one_line_error(server.cli("tool", "verify", dev.tool_id, "2.0.0", "--url", down), "cannot reach")
