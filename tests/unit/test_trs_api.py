"""The TRS 2.0.1 read API and the HelixGate publish/signing extension, over HTTP.

Runs on SQLite and PostgreSQL (the ``harness`` fixtures). Images resolve against the
in-process ``FakeOciRegistry`` (real HTTP, real resolver code); the real registry and
Docker engine are exercised in tests/integration/test_trs_images_registry.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from helixgate.errors import VerificationError
from helixgate.signing import KeyTrustPolicy, verify_tool_bundle
from tests.fixtures.app import Harness
from tests.fixtures.ga4gh_schemas import validate, validate_list
from tests.unit.test_trs_images import FakeOciRegistry
from trs_registry.domain import TrsRegistry
from trs_registry.validation import new_tool

TRS = "/ga4gh/trs/v2"
X = f"{TRS}/x-helixgate"

BWA_CWL = """cwlVersion: v1.2
class: CommandLineTool
baseCommand: [bwa, mem]
inputs:
  reads: {type: File, inputBinding: {position: 1}}
outputs: []
requirements:
  DockerRequirement: {dockerPull: "REGISTRY/tools/bwa:1.0"}
"""
STEP_CWL = "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\ninputs: []\noutputs: []\n"
BWA_WDL = "version 1.0\n\ntask bwa {\n  command { bwa mem }\n}\n"
TEST_JSON = '{"reads": {"class": "File", "path": "reads.fq"}}\n'
DOCKERFILE = "FROM busybox\nRUN true\n"


@pytest.fixture(scope="module")
def oci() -> Iterator[FakeOciRegistry]:
    fake = FakeOciRegistry()
    yield fake
    fake.close()


@pytest.fixture()
def make(harness_factory: Callable[..., Harness], oci: FakeOciRegistry) -> Callable[..., Harness]:
    def build(**overrides: Any) -> Harness:
        overrides.setdefault("registry_insecure_hosts", (oci.host,))
        return harness_factory(services=("trs",), **overrides)

    return build


@pytest.fixture()
def h(make: Callable[..., Harness]) -> Harness:
    return make()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_tool(h: Harness, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"organization": "Example Lab", "name": "bwa", "description": "Burrows-Wheeler aligner", **fields}
    r = h.client.post(f"{X}/tools", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def version_body(
    oci: FakeOciRegistry, version: str = "1.0.0", *, repo: str = "tools/bwa", tag: str = "1.0", **extra: Any
) -> dict[str, Any]:
    if (repo, tag) not in oci.manifests:
        oci.push(repo, tag)
    body = {
        "id": version,
        "name": f"bwa {version}",
        "author": ["alice@example.org"],
        "files": [
            {"path": "bwa.cwl", "file_type": "PRIMARY_DESCRIPTOR", "content": BWA_CWL.replace("REGISTRY", oci.host)},
            {"path": "tools/sub/step.cwl", "file_type": "SECONDARY_DESCRIPTOR", "content": STEP_CWL},
            {"path": "bwa.wdl", "file_type": "PRIMARY_DESCRIPTOR", "descriptor_type": "WDL", "content": BWA_WDL},
            {"path": "tests/job.json", "file_type": "TEST_FILE", "content": TEST_JSON},
            {"path": "Dockerfile", "file_type": "CONTAINERFILE", "content": DOCKERFILE},
        ],
        "images": [f"{oci.host}/{repo}:{tag}"],
    }
    body.update(extra)
    return body


def publish(
    h: Harness, headers: dict[str, str], tool_id: str, body: dict[str, Any], status: int = 201
) -> dict[str, Any]:
    r = h.client.post(f"{X}/tools/{tool_id}/versions", json=body, headers=headers)
    assert r.status_code == status, r.text
    return r.json()  # type: ignore[no-any-return]


def records(h: Harness, **filters: Any) -> list[Any]:
    recs, _ = h.platform.audit.query(page_size=500, **filters)
    return recs


# ---------------------------------------------------------------- the read API against the official schemas
def test_read_api_validates_against_official_trs_schemas(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice, aliases=["bio.tools:bwa"])
    published = publish(h, alice, "example-lab.bwa", version_body(oci))
    validate("trs", "ToolVersion", published)
    base = f"{TRS}/tools/example-lab.bwa/versions/1.0.0"

    r = h.client.get(f"{TRS}/tools")
    assert r.status_code == 200
    validate_list("trs", "Tool", r.json())
    tool = r.json()[0]
    assert tool["id"] == "example-lab.bwa" and tool["aliases"] == ["bio.tools:bwa"]
    assert tool["url"].endswith("/ga4gh/trs/v2/tools/example-lab.bwa")

    validate("trs", "Tool", h.client.get(f"{TRS}/tools/example-lab.bwa").json())
    versions = h.client.get(f"{TRS}/tools/example-lab.bwa/versions").json()
    validate_list("trs", "ToolVersion", versions)
    version = h.client.get(base).json()
    validate("trs", "ToolVersion", version)
    assert version["signed"] is True and version["is_production"] is True
    assert version["descriptor_type"] == ["CWL", "WDL"]
    assert version["descriptor_type_version"] == {"CWL": ["v1.2"], "WDL": ["1.0"]}
    assert version["containerfile"] is True
    image = version["images"][0]
    manifest = image["image_name"].split("@", 1)[1]
    assert image["checksum"] == [{"type": "sha256", "checksum": manifest.removeprefix("sha256:")}]
    assert image["registry_host"] == oci.host and image["image_type"] == "Docker"

    # descriptor (JSON and PLAIN), by nested relative path, both languages
    cwl = h.client.get(f"{base}/CWL/descriptor").json()
    validate("trs", "FileWrapper", cwl)
    assert cwl["checksum"] == [{"type": "sha256", "checksum": sha(cwl["content"])}]
    plain = h.client.get(f"{base}/PLAIN_CWL/descriptor")
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
    assert plain.text == cwl["content"]
    nested = h.client.get(f"{base}/CWL/descriptor/tools/sub/step.cwl")
    assert nested.status_code == 200
    validate("trs", "FileWrapper", nested.json())
    assert nested.json()["content"] == STEP_CWL and nested.json()["checksum"][0]["checksum"] == sha(STEP_CWL)
    assert h.client.get(f"{base}/PLAIN_CWL/descriptor/tools/sub/step.cwl").text == STEP_CWL
    assert h.client.get(f"{base}/PLAIN_WDL/descriptor").text == BWA_WDL
    validate("trs", "FileWrapper", h.client.get(f"{base}/WDL/descriptor").json())

    # tests, files (JSON + zip), containerfile, tool classes
    tests = h.client.get(f"{base}/CWL/tests").json()
    validate_list("trs", "FileWrapper", tests)
    assert [t["content"] for t in tests] == [TEST_JSON]
    files = h.client.get(f"{base}/CWL/files").json()
    validate_list("trs", "ToolFile", files)
    assert {f["path"]: f["file_type"] for f in files} == {
        "bwa.cwl": "PRIMARY_DESCRIPTOR",
        "tools/sub/step.cwl": "SECONDARY_DESCRIPTOR",
        "tests/job.json": "TEST_FILE",
        "Dockerfile": "CONTAINERFILE",
    }
    assert {f["path"]: f["checksum"]["checksum"] for f in files}["tests/job.json"] == sha(TEST_JSON)
    zipped = h.client.get(f"{base}/CWL/files", params={"format": "zip"})
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert sorted(zf.namelist()) == ["Dockerfile", "bwa.cwl", "tests/job.json", "tools/sub/step.cwl"]
        assert zf.read("tools/sub/step.cwl").decode() == STEP_CWL
    wdl_files = h.client.get(f"{base}/WDL/files").json()
    assert sorted(f["path"] for f in wdl_files) == ["Dockerfile", "bwa.wdl"]
    containerfiles = h.client.get(f"{base}/containerfile").json()
    validate_list("trs", "FileWrapper", containerfiles)
    assert containerfiles[0]["content"] == DOCKERFILE and containerfiles[0]["image_type"] == "Docker"
    classes = h.client.get(f"{TRS}/toolClasses").json()
    validate_list("trs", "ToolClass", classes)
    assert {c["id"] for c in classes} == {"CommandLineTool", "Workflow"}

    # errors have the TRS shape
    for path in (
        f"{TRS}/tools/nope",
        f"{TRS}/tools/example-lab.bwa/versions/9.9.9",
        f"{base}/NFL/descriptor",
        f"{base}/CWL/descriptor/missing.cwl",
        f"{base}/CWL/descriptor/../bwa.wdl",
    ):
        r = h.client.get(path)
        assert r.status_code == 404, path
        validate("trs", "Error", r.json())
        assert r.json()["code"] == 404


def test_containerfile_404_when_none(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    body = version_body(oci)
    body["files"] = [f for f in body["files"] if f["file_type"] != "CONTAINERFILE"]
    publish(h, alice, "example-lab.bwa", body)
    r = h.client.get(f"{TRS}/tools/example-lab.bwa/versions/1.0.0/containerfile")
    assert r.status_code == 404 and "no containerfile" in r.json()["message"]
    assert h.client.get(f"{TRS}/tools/example-lab.bwa/versions/1.0.0").json()["containerfile"] is False


def test_service_info_validates(h: Harness) -> None:
    r = h.client.get(f"{TRS}/service-info")
    assert r.status_code == 200
    validate("service-info", "Service", r.json())
    validate("trs", "Service", r.json())
    assert r.json()["type"] == {"group": "org.ga4gh", "artifact": "trs", "version": "2.0.1"}


# ---------------------------------------------------------------- filters and paging
def test_tool_filters_and_paging(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice, id="org.example.bwa", aliases=["bwa-alias"], organization="Example")
    create_tool(
        h,
        alice,
        id="org.example.samtools",
        name="samtools",
        organization="Example",
        description="SAM utilities",
        toolclass="Workflow",
        has_checker=True,
    )
    create_tool(h, alice, id="org.other.gatk", name="gatk", organization="Other", description="Variant calling")
    publish(h, alice, "org.example.bwa", version_body(oci))
    wdl_only = version_body(oci, repo="lab/samtools", tag="1.17", author=["bob@example.org"])
    wdl_only["files"] = [f for f in wdl_only["files"] if f["path"] in ("bwa.wdl", "Dockerfile")]
    publish(h, alice, "org.example.samtools", wdl_only)

    def ids(**params: Any) -> list[str]:
        r = h.client.get(f"{TRS}/tools", params=params)
        assert r.status_code == 200, r.text
        validate_list("trs", "Tool", r.json())
        return [t["id"] for t in r.json()]

    assert ids() == ["org.example.bwa", "org.example.samtools", "org.other.gatk"]
    assert ids(id="org.other.gatk") == ["org.other.gatk"]
    assert ids(alias="bwa-alias") == ["org.example.bwa"]
    assert ids(toolClass="Workflow") == ["org.example.samtools"]
    assert ids(descriptorType="CWL") == ["org.example.bwa"]
    assert ids(descriptorType="WDL") == ["org.example.bwa", "org.example.samtools"]
    assert ids(registry=oci.host) == ["org.example.bwa", "org.example.samtools"]
    assert ids(registry="quay.io") == []
    assert ids(organization="Example") == ["org.example.bwa", "org.example.samtools"]
    assert ids(name="samtools") == ["org.example.samtools"]  # the image name (last repository component)
    assert ids(name="tools/bwa") == ["org.example.bwa"]
    assert ids(toolname="gatk") == ["org.other.gatk"]
    assert ids(description="variant") == ["org.other.gatk"]
    assert ids(description="100%") == []
    assert ids(author="bob@example.org") == ["org.example.samtools"]
    assert ids(checker="true") == ["org.example.samtools"]
    assert ids(checker="false") == ["org.example.bwa", "org.other.gatk"]
    assert ids(organization="Example", toolClass="CommandLineTool") == ["org.example.bwa"]

    r = h.client.get(f"{TRS}/tools", params={"limit": 1, "organization": "Example"})
    assert [t["id"] for t in r.json()] == ["org.example.bwa"]
    assert r.headers["current_offset"] == "0" and r.headers["current_limit"] == "1"
    assert r.headers["self_link"].endswith("/ga4gh/trs/v2/tools?organization=Example&offset=0&limit=1")
    assert r.headers["next_page"].endswith("/ga4gh/trs/v2/tools?organization=Example&offset=1&limit=1")
    assert r.headers["last_page"].endswith("offset=1&limit=1")
    r2 = h.client.get(r.headers["next_page"].split("127.0.0.1:8080", 1)[1])
    assert [t["id"] for t in r2.json()] == ["org.example.samtools"]
    assert "next_page" not in r2.headers
    assert h.client.get(f"{TRS}/tools", params={"offset": 10}).json() == []
    for bad in ({"offset": "abc"}, {"offset": "-1"}, {"limit": 0}, {"limit": 5000}):
        r = h.client.get(f"{TRS}/tools", params=bad)
        assert r.status_code == 400, bad
        validate("trs", "Error", r.json())


# ---------------------------------------------------------------- publish flow (key signer)
def test_publish_signs_and_the_bundle_verifies_with_served_trust_material(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    manifest, config = oci.push("tools/bwa", "2.0")
    body = version_body(oci, "2.0.0", tag="2.0")
    version = publish(h, alice, "example-lab.bwa", body)
    assert version["signed"] is True
    assert version["images"][0]["image_name"] == f"{oci.host}/tools/bwa@{manifest}"

    bundle = h.client.get(f"{X}/tools/example-lab.bwa/versions/2.0.0/bundle")
    assert bundle.status_code == 200
    assert bundle.headers["content-type"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    trust = h.client.get(f"{X}/signing/trust")  # public: no token
    assert trust.status_code == 200 and trust.json()["kind"] == "key"
    policy = KeyTrustPolicy.from_trust_material(trust.json())
    verified = verify_tool_bundle(
        bundle.text, policy=policy, expected_digest=manifest, tool_id="example-lab.bwa", version_id="2.0.0"
    )
    assert verified.claim.digest_kind == "manifest"
    assert verified.claim.image_name == f"{oci.host}/tools/bwa"
    assert verified.claim.publisher == "alice"
    assert dict(verified.claim.descriptor_checksums) == {f["path"]: sha(f["content"]) for f in body["files"]}
    with pytest.raises(VerificationError):  # bound to this tool version
        verify_tool_bundle(
            bundle.text, policy=policy, expected_digest=manifest, tool_id="example-lab.bwa", version_id="1.0.0"
        )

    # the record WES reads: pinned image, manifest AND config digest, checksums, bundle
    record = h.client.get(f"{X}/tools/example-lab.bwa/versions/2.0.0", params={"include_content": "true"}).json()
    img = record["images"][0]
    assert (img["manifest_digest"], img["config_digest"], img["primary"]) == (manifest, config, True)
    assert img["reference"] == f"{oci.host}/tools/bwa:2.0" and img["source"] == "registry"
    assert record["signature"]["subject_digest"] == manifest
    assert record["signature"]["bundle"] == json.loads(bundle.text)
    assert {f["path"]: f["checksum"]["checksum"] for f in record["files"]} == dict(verified.claim.descriptor_checksums)
    assert {f["path"]: f["content"] for f in record["files"]} == {f["path"]: f["content"] for f in body["files"]}

    publishes = records(h, action_prefix="trs.version.publish")
    assert len(publishes) == 1
    assert publishes[0].actor == "alice" and publishes[0].target == "example-lab.bwa:2.0.0"
    assert publishes[0].details["subject_digest"] == manifest


def test_republish_is_409_and_the_version_is_unchanged(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    publish(h, alice, "example-lab.bwa", version_body(oci))
    before = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0").json()
    changed = version_body(oci)
    changed["files"][0]["content"] += "# changed\n"
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=changed, headers=alice)
    assert r.status_code == 409
    validate("trs", "Error", r.json())
    assert "already published and is immutable" in r.json()["message"]
    assert h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0").json() == before


@pytest.mark.parametrize(
    "version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0+", "latest", "1.0.0/x", "", "1.0.0-01"]
)
def test_version_ids_must_be_semver(h: Harness, oci: FakeOciRegistry, version: str) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=version_body(oci, version), headers=alice)
    assert r.status_code == 400, version
    assert "semantic version" in r.json()["message"]


def test_semver_prerelease_and_build_accepted_and_ordered(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    for version in ("1.10.0", "1.2.0", "1.2.0-rc.1", "1.2.0-beta", "2.0.0-alpha+build.5"):
        publish(h, alice, "example-lab.bwa", version_body(oci, version))
    listed = [x["id"] for x in h.client.get(f"{TRS}/tools/example-lab.bwa/versions").json()]
    assert listed == ["1.2.0-beta", "1.2.0-rc.1", "1.2.0", "1.10.0", "2.0.0-alpha+build.5"]
    r = h.client.get(f"{TRS}/tools/example-lab.bwa/versions/2.0.0-alpha%2Bbuild.5")
    assert r.status_code == 200 and r.json()["id"] == "2.0.0-alpha+build.5"


@pytest.mark.parametrize(
    "path, message",
    [
        ("../evil.cwl", "leaves its directory"),
        ("a/../../evil.cwl", "leaves its directory"),
        ("/etc/passwd", "absolute"),
        ("C:/evil.cwl", "absolute"),
        ("a\\b.cwl", "backslash"),
        ("a\x00b.cwl", "NUL"),
        ("a//b.cwl", "empty or '.' segment"),
        ("./b.cwl", "empty or '.' segment"),
        ("a/\nb.cwl", "control characters"),
    ],
)
def test_path_traversal_is_refused(h: Harness, oci: FakeOciRegistry, path: str, message: str) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    body = version_body(oci)
    body["files"][1]["path"] = path
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == 400, path
    assert message in r.json()["message"]
    assert h.client.get(f"{TRS}/tools/example-lab.bwa/versions").json() == []


def test_size_limits_are_413(h: Harness, oci: FakeOciRegistry) -> None:
    from trs_registry.validation import MAX_FILE_BYTES, MAX_REQUEST_BYTES

    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    body = version_body(oci)
    body["files"][1]["content"] = "#" * (MAX_FILE_BYTES + 1)
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == 413 and "tools/sub/step.cwl" in r.json()["message"]
    body["files"] = body["files"][:1] + [
        {"path": f"big/{i}.txt", "file_type": "OTHER", "content": "x" * (MAX_FILE_BYTES - 10)} for i in range(9)
    ]
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == 413 and "total" in r.json()["message"]
    # the whole request is bounded too, before its JSON is parsed
    r = h.client.post(
        f"{X}/tools/example-lab.bwa/versions", json={**version_body(oci), "pad": "x" * MAX_REQUEST_BYTES}, headers=alice
    )
    assert r.status_code == 413 and "request body is larger" in r.json()["message"]


@pytest.mark.parametrize(
    "mutate, status, message",
    [
        (lambda b: b.update(images=[]), 400, "images must be a non-empty list"),
        (lambda b: b["files"].__delitem__(0), 400, "no CWL PRIMARY_DESCRIPTOR"),
        (lambda b: b["files"].append(dict(b["files"][0])), 400, "appears twice"),
        (lambda b: b["files"][0].update(content="just text"), 400, "'cwlVersion' and 'class'"),
        (lambda b: b["files"][0].update(file_type="SCRIPT"), 400, "'SCRIPT' is not one of"),
        (lambda b: b.update(descriptor_type="NFL"), 400, "'NFL' is not one of"),
        (lambda b: b["files"][0].pop("content"), 400, "'content' is a required property"),
        # shapes are the OpenAPI document's to check (connexion), rules are trs_registry.validation's
        (lambda b: b["files"].append("x"), 400, "'x' is not of type 'object'"),
        (lambda b: b["files"][0].update(content=5), 400, "5 is not of type 'string'"),
        (lambda b: b.update(files="t.cwl"), 400, "'t.cwl' is not of type 'array'"),
        (lambda b: b.update(signed=True), 400, "unknown field(s) in publish request: signed"),
    ],
)
def test_publish_request_validation(
    h: Harness, oci: FakeOciRegistry, mutate: Callable[[dict[str, Any]], None], status: int, message: str
) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    body = version_body(oci)
    mutate(body)
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


# ---------------------------------------------------------------- image pinning through the API
def test_unknown_tag_is_400(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    body = version_body(oci)
    body["images"] = [f"{oci.host}/tools/bwa:does-not-exist"]
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == 400
    assert r.json()["message"].endswith(f"does not resolve: tag does-not-exist not found in {oci.host}/tools/bwa")


def test_client_digest_is_never_trusted(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    manifest, _ = oci.push("tools/bwa", "1.0")
    lie = "sha256:" + "e" * 64
    body = version_body(oci)
    body["images"] = [{"reference": f"{oci.host}/tools/bwa:1.0", "digest": lie}]
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=body, headers=alice)
    assert r.status_code == 409
    assert lie in r.json()["message"] and manifest in r.json()["message"]
    events = records(h, category="security", action_prefix="trs.publish.refused")
    assert events and events[0].details["expected"] == lie and events[0].details["actual"] == manifest
    body["images"] = [{"reference": f"{oci.host}/tools/bwa:1.0", "digest": manifest}]
    assert publish(h, alice, "example-lab.bwa", body)["signed"] is True


def test_image_drift_is_reported(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    pinned, _ = oci.push("tools/drift", "1.0")
    publish(h, alice, "example-lab.bwa", version_body(oci, repo="tools/drift", tag="1.0"))
    url = f"{X}/tools/example-lab.bwa/versions/1.0.0/image-status"
    assert h.client.get(url).status_code == 401  # outbound requests: never for anonymous callers
    report = h.client.get(url, headers=alice).json()
    assert report["current"] is True and report["images"][0]["status"] == "current"

    repointed, _ = oci.push("tools/drift", "1.0")  # the tag now names another image
    report = h.client.get(url, headers=alice).json()
    assert report["current"] is False
    assert report["images"][0] | {"message": ""} == {
        "reference": f"{oci.host}/tools/drift:1.0",
        "pinned_digest": pinned,
        "current_digest": repointed,
        "status": "drifted",
        "message": "",
    }
    events = records(h, category="security", action_prefix="trs.image.drift")
    assert events and events[0].details["actual"] == repointed
    # the version still serves the pinned digest
    image = h.client.get(f"{TRS}/tools/example-lab.bwa/versions/1.0.0").json()["images"][0]
    assert image["image_name"].endswith(pinned)


# ---------------------------------------------------------------- who may do what
def test_anonymous_read_on(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    publish(h, alice, "example-lab.bwa", version_body(oci))
    for path in (
        "/tools",
        "/tools/example-lab.bwa",
        "/tools/example-lab.bwa/versions/1.0.0/PLAIN_CWL/descriptor",
        "/x-helixgate/tools/example-lab.bwa/versions/1.0.0/bundle",
        "/toolClasses",
    ):
        assert h.client.get(TRS + path).status_code == 200, path
    assert h.client.post(f"{X}/tools", json={"organization": "a", "name": "b"}).status_code == 401


def test_anonymous_read_off(make: Callable[..., Harness], oci: FakeOciRegistry) -> None:
    h = make(anonymous_read=False)
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    publish(h, alice, "example-lab.bwa", version_body(oci))
    for path in (
        "/tools",
        "/tools/example-lab.bwa/versions/1.0.0/PLAIN_CWL/descriptor",
        "/toolClasses",
        "/x-helixgate/tools/example-lab.bwa/versions/1.0.0",
    ):
        r = h.client.get(TRS + path)
        assert r.status_code == 401, path
        validate("trs", "Error", r.json())
    viewer = h.auth("victor", "viewer")
    assert h.client.get(f"{TRS}/tools", headers=viewer).status_code == 200
    assert h.client.get(f"{TRS}/service-info").status_code == 200  # public
    assert h.client.get(f"{X}/signing/trust").status_code == 200  # public


def test_only_the_owner_publishes(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    bob = h.auth("bob", "tool-developer")
    admin = h.auth("root", "admin")
    admin_dev = h.auth("ada", "admin", "tool-developer")
    viewer = h.auth("victor", "viewer")
    create_tool(h, alice)
    for who, status in ((bob, 403), (admin, 403), (admin_dev, 403), (viewer, 403)):
        r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=version_body(oci), headers=who)
        assert r.status_code == status
    assert (
        "only the tool's owner"
        in h.client.post(f"{X}/tools/example-lab.bwa/versions", json=version_body(oci), headers=bob).json()["message"]
    )
    assert h.client.patch(f"{X}/tools/example-lab.bwa", json={"description": "mine"}, headers=bob).status_code == 403
    assert h.client.post(f"{X}/tools", json={"organization": "x", "name": "y"}, headers=viewer).status_code == 403
    assert h.client.get(f"{TRS}/tools/example-lab.bwa/versions").json() == []
    publish(h, alice, "example-lab.bwa", version_body(oci))
    denied = records(h, category="security", action_prefix="auth.denied")
    assert {r.actor for r in denied} >= {"bob", "root", "ada", "victor"}


def test_tool_ids(h: Harness) -> None:
    alice = h.auth("alice", "tool-developer")
    assert create_tool(h, alice, organization="Ünïversity Lab", name="BWA mem 2")["id"] == "university-lab.bwa-mem-2"
    assert create_tool(h, alice, id="hg-bwa")["id"] == "hg-bwa"
    r = h.client.post(f"{X}/tools", json={"id": "org/bwa", "organization": "o", "name": "n"}, headers=alice)
    assert r.status_code == 400 and "no '/'" in r.json()["message"]
    r = h.client.post(f"{X}/tools", json={"id": "hg-bwa", "organization": "o", "name": "n"}, headers=alice)
    assert r.status_code == 409
    r = h.client.post(
        f"{X}/tools", json={"organization": "o", "name": "n", "aliases": ["x"], "id": "a1"}, headers=alice
    )
    assert r.status_code == 201
    r = h.client.post(
        f"{X}/tools", json={"organization": "o", "name": "n", "aliases": ["x"], "id": "a2"}, headers=alice
    )
    assert r.status_code == 409 and "alias 'x'" in r.json()["message"]


# ---------------------------------------------------------------- metadata edits
def test_metadata_edits_bump_meta_version_and_are_audited(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    publish(h, alice, "example-lab.bwa", version_body(oci))
    r = h.client.patch(f"{X}/tools/example-lab.bwa", json={"description": "new", "aliases": ["a", "b"]}, headers=alice)
    assert r.status_code == 200
    assert r.json()["meta_version"] == "2" and r.json()["aliases"] == ["a", "b"]
    assert r.json()["x_helixgate"]["updated_by"] == "alice"
    same = h.client.patch(f"{X}/tools/example-lab.bwa", json={"description": "new"}, headers=alice)
    assert same.json()["meta_version"] == "2"  # nothing changed: no bump
    r = h.client.patch(f"{X}/tools/example-lab.bwa", json={"aliases": ["b"]}, headers=alice)
    assert r.json()["aliases"] == ["b"] and r.json()["meta_version"] == "3"
    assert h.client.patch(f"{X}/tools/example-lab.bwa", json={"id": "x"}, headers=alice).status_code == 400

    version_url = f"{X}/tools/example-lab.bwa/versions/1.0.0"
    r = h.client.patch(version_url, json={"name": "renamed", "author": ["carol"]}, headers=alice)
    assert r.status_code == 200 and r.json()["meta_version"] == "2"
    assert (r.json()["name"], r.json()["author"]) == ("renamed", ["carol"])
    validate("trs", "ToolVersion", r.json())
    r = h.client.patch(version_url, json={"files": []}, headers=alice)
    assert r.status_code == 400 and "immutable" in r.json()["message"]
    assert h.client.get(f"{TRS}/tools", params={"author": "carol"}).json()[0]["id"] == "example-lab.bwa"

    # verification is an administrator's statement
    assert h.client.put(f"{version_url}/verification", json={"verified": True}, headers=alice).status_code == 403
    admin = h.auth("root", "admin")
    r = h.client.put(f"{version_url}/verification", json={"verified": True}, headers=admin)
    assert r.status_code == 400 and "verified_source" in r.json()["message"]
    r = h.client.put(
        f"{version_url}/verification", json={"verified": True, "verified_source": ["qa@example.org"]}, headers=admin
    )
    assert r.status_code == 200 and r.json()["verified"] is True and r.json()["meta_version"] == "3"

    changes = records(h, category="change", service="trs")
    seen = [(c.action, c.actor, c.target) for c in reversed(changes)]
    assert seen == [
        ("trs.tool.create", "alice", "example-lab.bwa"),
        ("trs.version.publish", "alice", "example-lab.bwa:1.0.0"),
        ("trs.tool.update", "alice", "example-lab.bwa"),
        ("trs.tool.update", "alice", "example-lab.bwa"),
        ("trs.version.update", "alice", "example-lab.bwa:1.0.0"),
        ("trs.version.verification", "root", "example-lab.bwa:1.0.0"),
    ]
    first_edit = next(c for c in reversed(changes) if c.action == "trs.tool.update")
    assert first_edit.details["fields"] == ["description", "aliases"] and first_edit.details["meta_version"] == 2
    assert first_edit.time is not None


# ---------------------------------------------------------------- keys
def test_key_rotation_and_revocation(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    admin = h.auth("root", "admin")
    create_tool(h, alice)
    manifest, _ = oci.push("tools/bwa", "1.0")
    publish(h, alice, "example-lab.bwa", version_body(oci))
    old_key = h.client.get(f"{X}/signing/trust").json()["activeKeyId"]

    assert h.client.post(f"{X}/signing/keys/rotate", headers=alice).status_code == 403
    r = h.client.post(f"{X}/signing/keys/rotate", headers=admin)
    assert r.status_code == 200
    new_key = r.json()["active_key_id"]
    assert new_key != old_key
    trust = h.client.get(f"{X}/signing/trust").json()
    assert trust["activeKeyId"] == new_key and {k["keyId"] for k in trust["keys"]} == {old_key, new_key}
    old_bundle = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0/bundle").text
    args = {"expected_digest": manifest, "tool_id": "example-lab.bwa", "version_id": "1.0.0"}
    assert (
        verify_tool_bundle(old_bundle, policy=KeyTrustPolicy.from_trust_material(trust), **args).signer.key_id
        == old_key
    )

    r = h.client.post(f"{X}/signing/keys/{old_key}/revoke", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "revoked_key_id": old_key,
        "active_key_id": new_key,
        "resigned": ["example-lab.bwa:1.0.0"],
        "unsigned": [],
    }
    trust = h.client.get(f"{X}/signing/trust").json()
    policy = KeyTrustPolicy.from_trust_material(trust)
    with pytest.raises(VerificationError, match="revoked"):
        verify_tool_bundle(old_bundle, policy=policy, **args)
    new_bundle = h.client.get(f"{X}/tools/example-lab.bwa/versions/1.0.0/bundle").text
    assert verify_tool_bundle(new_bundle, policy=policy, **args).signer.key_id == new_key
    assert h.client.get(f"{TRS}/tools/example-lab.bwa/versions/1.0.0").json()["signed"] is True
    assert h.client.post(f"{X}/signing/keys/{'0' * 64}/revoke", headers=admin).status_code == 404
    assert [c.action for c in records(h, action_prefix="trs.signing")] == ["trs.signing.revoke", "trs.signing.rotate"]


# ---------------------------------------------------------------- publisher signature policy
def test_required_publisher_signature_missing_is_refused(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(
        h, alice, required_publisher_identities=[{"identity": "alice@lab.example", "issuer": "https://issuer.example"}]
    )
    r = h.client.post(f"{X}/tools/example-lab.bwa/versions", json=version_body(oci), headers=alice)
    assert r.status_code == 403
    assert "requires a publisher signature by alice@lab.example (issuer https://issuer.example)" in r.json()["message"]
    events = records(h, category="security", action_prefix="trs.publish.refused.publisher_signature")
    assert len(events) == 1 and events[0].target == "example-lab.bwa"
    # without a policy a publisher bundle cannot be checked against anyone
    create_tool(h, alice, id="plain-tool")
    r = h.client.post(
        f"{X}/tools/plain-tool/versions", json=version_body(oci, publisher_bundle={"mediaType": "x"}), headers=alice
    )
    assert r.status_code == 400 and "required_publisher_identities" in r.json()["message"]


# ---------------------------------------------------------------- cwltool's pre-2.0 paths
def test_cwltool_alias_paths(h: Harness, oci: FakeOciRegistry) -> None:
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    publish(h, alice, "example-lab.bwa", version_body(oci, "1.0.0"))
    publish(h, alice, "example-lab.bwa", version_body(oci, "1.1.0"))
    publish(h, alice, "example-lab.bwa", version_body(oci, "2.0.0-rc.1"))
    api = f"{TRS}/api/ga4gh/v2/tools"
    for tool in ("example-lab.bwa", "%23workflow%2Fexample-lab.bwa", "%23tool%2Fexample-lab.bwa"):
        assert h.client.head(f"{api}/{tool}/versions/1.0.0/CWL/files").status_code == 200
        files = h.client.get(f"{api}/{tool}/versions/1.0.0/CWL/files").json()
        validate_list("trs", "ToolFile", files)
        primary = next(f["path"] for f in files if f["file_type"] == "PRIMARY_DESCRIPTOR")
        r = h.client.get(f"{api}/{tool}/versions/1.0.0/plain-CWL/descriptor/{primary}")
        assert r.status_code == 200 and r.text.startswith("cwlVersion: v1.2")
    assert (
        h.client.get(f"{api}/example-lab.bwa/versions/1.0.0/plain-CWL/descriptor/tools/sub/step.cwl").text == STEP_CWL
    )
    assert h.client.get(f"{api}/example-lab.bwa/versions/latest/plain-CWL/descriptor").status_code == 200
    latest = h.client.get(f"{api}/example-lab.bwa/versions/latest/CWL/files")
    assert latest.status_code == 200
    assert h.client.get(f"{TRS}/tools/example-lab.bwa/versions/latest").status_code == 404  # TRS itself stays strict
    assert h.client.get(f"{api}/nope/versions/1.0.0/CWL/files").status_code == 404


def test_publish_signs_the_image_config_digest_and_legacy_v1_statements_are_re_signed(
    h: Harness, oci: FakeOciRegistry
) -> None:
    """v2 predicates carry the config digest; a v1 bundle (written before) is re-signed as v2 by
    the start-up migration, keeping the verified claim and adding the recorded config digest."""
    import dataclasses

    from helixgate.signing.statement import PREDICATE_TYPE, PREDICATE_TYPE_V1
    from trs_registry.models import ToolVersionRow

    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    manifest, config = oci.push("tools/bwa", "3.0")
    publish(h, alice, "example-lab.bwa", version_body(oci, "3.0.0", tag="3.0"))
    registry = h.platform.domain(TrsRegistry)
    policy = registry.trust_policy()

    def verified() -> Any:
        return verify_tool_bundle(
            registry.bundle("example-lab.bwa", "3.0.0"),
            policy=policy,
            expected_digest=None,
            tool_id="example-lab.bwa",
            version_id="3.0.0",
        )

    current = verified()
    assert current.predicate_type == PREDICATE_TYPE
    assert current.claim.config_digest == config and current.claim.image_digest == manifest
    # what a registry of the previous release stored: the same claim under predicate v1
    legacy_bundle = registry.signer.sign(dataclasses.replace(current.claim, config_digest=""))
    with h.platform.db.session() as s:
        row = s.scalars(sa.select(ToolVersionRow).where(ToolVersionRow.version_id == "3.0.0")).one()
        row.bundle = legacy_bundle
    legacy = verified()
    assert legacy.predicate_type == PREDICATE_TYPE_V1 and legacy.claim.config_digest == ""
    assert registry.upgrade_legacy_statements() == ["example-lab.bwa:3.0.0"]
    upgraded = verified()
    assert upgraded.predicate_type == PREDICATE_TYPE
    assert upgraded.claim == current.claim
    assert registry.upgrade_legacy_statements() == []  # idempotent


def test_key_revocation_re_signs_what_was_signed_not_the_edited_tables(h: Harness, oci: FakeOciRegistry) -> None:
    """A checksum edited in the tables before an admin revokes the key is not laundered into
    the new signature: the re-signed claim is the old bundle's verified claim."""
    from trs_registry.models import ToolFileRow

    admin = h.auth("root", "admin")
    alice = h.auth("alice", "tool-developer")
    create_tool(h, alice)
    manifest, _ = oci.push("tools/bwa", "5.0")
    body = version_body(oci, "5.0.0", tag="5.0")
    publish(h, alice, "example-lab.bwa", body)
    old_key = h.client.get(f"{X}/signing/trust").json()["activeKeyId"]
    with h.platform.db.session() as s:
        row = s.scalars(sa.select(ToolFileRow).where(ToolFileRow.path == "tools/sub/step.cwl")).one()
        row.sha256 = "ee" * 32  # the attacker's edit
    assert h.client.post(f"{X}/signing/keys/rotate", headers=admin).status_code == 200
    r = h.client.post(f"{X}/signing/keys/{old_key}/revoke", headers=admin)
    assert r.status_code == 200 and r.json()["resigned"] == ["example-lab.bwa:5.0.0"], r.text
    policy = KeyTrustPolicy.from_trust_material(h.client.get(f"{X}/signing/trust").json())
    bundle = h.client.get(f"{X}/tools/example-lab.bwa/versions/5.0.0/bundle").text
    claim = verify_tool_bundle(
        bundle, policy=policy, expected_digest=manifest, tool_id="example-lab.bwa", version_id="5.0.0"
    ).claim
    assert claim.descriptor_checksums["tools/sub/step.cwl"] == sha(STEP_CWL)


def test_concurrent_id_and_alias_claims_never_both_win(h: Harness) -> None:
    """One namespace under concurrency: a tool created with id X while another tool is created
    with alias X (both checks pass on their own snapshot without the writers' lock) — exactly
    one of the two wins, on SQLite and PostgreSQL."""
    import threading

    from helixgate.errors import Conflict

    trs = h.platform.domain(TrsRegistry)
    for i in range(12):
        name = f"race-{i}.tool"
        barrier = threading.Barrier(2)
        won: list[str] = []
        refused: list[str] = []

        def claim(kind: str, body: dict[str, Any]) -> None:
            barrier.wait()
            try:
                trs.create_tool("alice", new_tool(body))
                won.append(kind)
            except Conflict:
                refused.append(kind)

        as_id = {"organization": "race", "name": f"a{i}", "id": name}
        as_alias = {"organization": "race", "name": f"b{i}", "id": f"squat-{i}.tool", "aliases": [name]}
        threads = [threading.Thread(target=claim, args=(k, b)) for k, b in (("id", as_id), ("alias", as_alias))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(refused) == 1, (i, won, refused)
