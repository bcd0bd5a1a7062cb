"""Publishing against the real OCI registry (127.0.0.1:5000) and the real Docker engine.

The registry resolves every reference itself: over the Registry HTTP API v2 for pushed
images (manifest digest + config digest = the image id the engine shows), against the
engine for local-only images. Run with ``-p tests.fixtures.docker_images`` until that
module is registered in tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import docker
import pytest

from helixgate.images import build_busybox_image, push_image
from helixgate.signing import KeyTrustPolicy, verify_tool_bundle
from tests.fixtures.app import Harness
from tests.fixtures.docker_images import TEST_LABEL
from tests.fixtures.ga4gh_schemas import validate

pytestmark = pytest.mark.integration

TRS = "/ga4gh/trs/v2"
X = f"{TRS}/x-helixgate"
CWL = "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [cat]\ninputs: []\noutputs: []\n"


@pytest.fixture()
def h(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory(services=("trs",))  # registry_insecure_hosts defaults to 127.0.0.1:5000


def body(version: str, *images: Any) -> dict[str, Any]:
    return {
        "id": version,
        "files": [{"path": "tool.cwl", "file_type": "PRIMARY_DESCRIPTOR", "content": CWL}],
        "images": list(images),
    }


def new_tool(h: Harness, headers: dict[str, str]) -> str:
    tool_id = f"it-{uuid.uuid4().hex[:10]}"
    r = h.client.post(f"{X}/tools", json={"id": tool_id, "organization": "it", "name": "cat"}, headers=headers)
    assert r.status_code == 201, r.text
    return tool_id


def build(client: docker.DockerClient, session: str, marker: str) -> str:
    """A fresh busybox image (distinct content per ``marker``) labelled for session clean-up."""
    return build_busybox_image(
        client,
        "helixgate-test/trs",
        f"{session}-{marker}",
        extra_files={"/etc/marker": marker.encode()},
        labels={TEST_LABEL: session},
    )


def test_publish_pins_a_pushed_image_and_detects_a_repointed_tag(
    h: Harness, docker_client: docker.DockerClient, registry_host: str, test_session_id: str
) -> None:
    alice = h.auth("alice", "tool-developer")
    tool_id = new_tool(h, alice)
    repo, tag = "helixgate-test/trs-tool", f"s-{test_session_id}-{uuid.uuid4().hex[:6]}"
    first_id = build(docker_client, test_session_id, "first-" + tag)
    first_digest = push_image(docker_client, first_id, registry_host, repo, tag)
    reference = f"{registry_host}/{repo}:{tag}"

    r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body("1.0.0", reference), headers=alice)
    assert r.status_code == 201, r.text
    version = r.json()
    validate("trs", "ToolVersion", version)
    image = version["images"][0]
    assert image["image_name"] == f"{registry_host}/{repo}@{first_digest}"
    assert image["checksum"] == [{"type": "sha256", "checksum": first_digest.removeprefix("sha256:")}]
    assert image["registry_host"] == registry_host and version["signed"] is True

    record = h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0").json()
    pinned = record["images"][0]
    # the config digest read from the registry's manifest is the image id the engine shows
    assert (pinned["manifest_digest"], pinned["config_digest"]) == (first_digest, first_id)
    policy = KeyTrustPolicy.from_trust_material(h.client.get(f"{X}/signing/trust").json())
    bundle = h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0/bundle").text
    verified = verify_tool_bundle(
        bundle, policy=policy, expected_digest=first_digest, tool_id=tool_id, version_id="1.0.0"
    )
    assert verified.claim.image_name == f"{registry_host}/{repo}"

    status_url = f"{X}/tools/{tool_id}/versions/1.0.0/image-status"
    assert h.client.get(status_url, headers=alice).json()["current"] is True

    # someone re-points the tag at another image
    second_id = build(docker_client, test_session_id, "second-" + tag)
    second_digest = push_image(docker_client, second_id, registry_host, repo, tag)
    assert second_digest != first_digest
    report = h.client.get(status_url, headers=alice).json()
    assert report["current"] is False
    entry = report["images"][0]
    assert (entry["status"], entry["pinned_digest"], entry["current_digest"]) == (
        "drifted",
        first_digest,
        second_digest,
    )
    # the published version keeps the pinned digest ...
    assert (
        h.client.get(f"{TRS}/tools/{tool_id}/versions/1.0.0").json()["images"][0]["image_name"].endswith(first_digest)
    )
    # ... and a publish that expects the old content under the re-pointed tag is refused
    r = h.client.post(
        f"{X}/tools/{tool_id}/versions",
        json=body("1.0.1", {"reference": reference, "digest": first_digest}),
        headers=alice,
    )
    assert r.status_code == 409
    assert first_digest in r.json()["message"] and second_digest in r.json()["message"]
    events, _ = h.platform.audit.query(category="security", action_prefix="trs.")
    assert {e.action for e in events} >= {"trs.image.drift", "trs.publish.refused"}


def test_pinned_by_digest_reference(
    h: Harness, docker_client: docker.DockerClient, registry_host: str, test_session_id: str
) -> None:
    alice = h.auth("alice", "tool-developer")
    tool_id = new_tool(h, alice)
    tag = f"d-{test_session_id}-{uuid.uuid4().hex[:6]}"
    image_id = build(docker_client, test_session_id, tag)
    digest = push_image(docker_client, image_id, registry_host, "helixgate-test/trs-digest", tag)
    ref = f"{registry_host}/helixgate-test/trs-digest@{digest}"
    r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body("1.0.0", ref), headers=alice)
    assert r.status_code == 201, r.text
    pinned = h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0").json()["images"][0]
    assert (pinned["manifest_digest"], pinned["config_digest"], pinned["tag"]) == (digest, image_id, "")


def test_local_only_image_resolves_against_the_engine(h: Harness, busybox_image: str, test_session_id: str) -> None:
    alice = h.auth("alice", "tool-developer")
    tool_id = new_tool(h, alice)
    local_ref = f"helixgate-test/busybox:s-{test_session_id}"
    r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body("1.0.0", local_ref), headers=alice)
    assert r.status_code == 201, r.text
    image = r.json()["images"][0]
    assert image["image_name"] == busybox_image  # sha256:<image id>: the engine's own pinned reference
    assert image["checksum"] == [{"type": "sha256", "checksum": busybox_image.removeprefix("sha256:")}]
    assert "registry_host" not in image
    record = h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0").json()
    assert record["images"][0]["source"] == "local" and record["images"][0]["manifest_digest"] is None
    assert record["signature"]["digest_kind"] == "image-id"
    policy = KeyTrustPolicy.from_trust_material(h.client.get(f"{X}/signing/trust").json())
    bundle = h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0/bundle").text
    verified = verify_tool_bundle(
        bundle, policy=policy, expected_digest=busybox_image, tool_id=tool_id, version_id="1.0.0"
    )
    assert verified.claim.digest_kind == "image-id"

    # by image id, and a wrong expectation
    r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body("1.1.0", busybox_image), headers=alice)
    assert r.status_code == 201, r.text
    r = h.client.post(
        f"{X}/tools/{tool_id}/versions",
        json=body("1.2.0", {"reference": local_ref, "digest": "sha256:" + "0" * 64}),
        headers=alice,
    )
    assert r.status_code == 409
    assert h.client.get(f"{X}/tools/{tool_id}/versions/1.0.0/image-status", headers=alice).json()["current"] is True


def test_nonexistent_images_are_400(h: Harness, registry_host: str) -> None:
    alice = h.auth("alice", "tool-developer")
    tool_id = new_tool(h, alice)
    for ref, message in (
        (f"{registry_host}/helixgate-test/busybox:no-such-tag-{uuid.uuid4().hex[:8]}", "does not resolve: tag"),
        (f"{registry_host}/helixgate-test/no-such-repo-{uuid.uuid4().hex[:8]}:1.0", "does not resolve"),
        (f"helixgate-test/no-such-local-{uuid.uuid4().hex[:8]}:1.0", "does not exist in the local Docker engine"),
        ("sha256:" + "0" * 64, "does not exist in the local Docker engine"),
    ):
        r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body("1.0.0", ref), headers=alice)
        assert r.status_code == 400, (ref, r.text)
        assert message in r.json()["message"], ref
    assert h.client.get(f"{TRS}/tools/{tool_id}/versions").json() == []
