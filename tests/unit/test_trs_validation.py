"""Pure validation rules of the tool registry, and the official-schema validator itself."""

from __future__ import annotations

import random

import pytest

from helixgate.errors import BadRequest, PayloadTooLarge
from tests.fixtures.ga4gh_schemas import SchemaMismatch, schema_names, validate, validate_list
from trs_registry import validation as v


@pytest.mark.parametrize(
    "good",
    [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0-x-y-z.--",
    ],
)
def test_semver_accepted(good: str) -> None:
    assert v.check_version_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "1",
        "1.2",
        "1.2.3.4",
        "01.1.1",
        "1.01.1",
        "v1.2.3",
        "1.2.3-",
        "1.2.3-01",
        "1.2.3+",
        "1.2.3-a..b",
        " 1.2.3",
        "1.2.3\n",
        "latest",
        "",
        None,
        123,
    ],
)
def test_semver_refused(bad: object) -> None:
    with pytest.raises(BadRequest):
        v.check_version_id(bad)


def test_semver_precedence() -> None:
    # the example order from semver.org section 11
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=v.semver_key) == ordered


@pytest.mark.parametrize("good", ["bwa.cwl", "tools/sub/step.cwl", "a-b_c.d/e f.json", "Dockerfile", "..hidden/x"])
def test_paths_accepted(good: str) -> None:
    assert v.check_path(good) == good


@pytest.mark.parametrize(
    "bad", ["", "/abs", "..", "../x", "a/../b", "a\\b", "a\x00b", "a//b", "./a", "a/.", "c:/x", "a/\tb", "x" * 513, 5]
)
def test_paths_refused(bad: object) -> None:
    with pytest.raises(BadRequest):
        v.check_path(bad)


def test_tool_ids() -> None:
    assert v.derive_tool_id("Example Lab", "BWA mem") == "example-lab.bwa-mem"
    assert v.check_tool_id("org.example.bwa") == "org.example.bwa"
    for bad in ("org/bwa", "Org.bwa", "-bwa", "bwa-", "", "a" * 129, "a b", "#workflow", "bwa\n"):
        with pytest.raises(BadRequest):
            v.check_tool_id(bad)
    with pytest.raises(BadRequest):
        v.derive_tool_id("!!!", "???")


def _publish(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "1.0.0",
        "files": [
            {"path": "t.cwl", "file_type": "PRIMARY_DESCRIPTOR", "content": "cwlVersion: v1.0\nclass: Workflow\n"}
        ],
        "images": ["helixgate/t:1"],
    }
    body.update(overrides)
    return body


def test_publish_spec_checksums_and_language_versions() -> None:
    import hashlib

    spec = v.publish_spec(_publish())
    assert spec.files[0].sha256 == hashlib.sha256(b"cwlVersion: v1.0\nclass: Workflow\n").hexdigest()
    assert spec.descriptor_type_versions == {"CWL": ["v1.0"]}
    assert spec.images == [v.ImageSpec("helixgate/t:1", None)]


def test_publish_spec_limits() -> None:
    many = [{"path": f"f{i}", "file_type": "OTHER", "content": ""} for i in range(v.MAX_FILES + 1)]
    with pytest.raises(PayloadTooLarge):
        v.publish_spec(_publish(files=many))
    with pytest.raises(BadRequest, match="at most"):
        v.publish_spec(_publish(images=[f"h/i:{n}" for n in range(v.MAX_IMAGES + 1)]))
    with pytest.raises(BadRequest, match="twice"):
        v.publish_spec(_publish(images=["h/i:1", "h/i:1"]))
    with pytest.raises(BadRequest, match="one CWL PRIMARY_DESCRIPTOR"):
        files = _publish()["files"]
        assert isinstance(files, list)
        v.publish_spec(_publish(files=files + [{**files[0], "path": "other.cwl"}]))
    with pytest.raises(BadRequest, match="has no descriptor_type"):
        v.publish_spec(
            _publish(
                files=[
                    *_publish()["files"],
                    {
                        "path": "D",
                        "file_type": "CONTAINERFILE",  # type: ignore[misc]
                        "content": "",
                        "descriptor_type": "CWL",
                    },
                ]
            )
        )


def test_version_edits_cannot_touch_frozen_fields() -> None:
    assert v.version_edit({"name": "n", "author": ["a"]}) == v.VersionEdit(name="n", author=("a",))
    for field in ("files", "images", "signed", "id", "verified"):
        with pytest.raises(BadRequest, match="immutable"):
            v.version_edit({field: None})


def test_a_new_tool_is_typed_and_its_id_defaults_to_organization_and_name() -> None:
    tool = v.new_tool({"organization": "Example Lab", "name": "BWA mem", "aliases": ["bwa"]})
    assert tool == v.NewTool(
        id="example-lab.bwa-mem",
        organization="Example Lab",
        name="BWA mem",
        toolclass="CommandLineTool",
        aliases=("bwa",),
    )
    with pytest.raises(BadRequest, match=r"tool field\(s\): id \(the id of a tool never changes\)"):
        v.tool_edit({"id": "other"})
    with pytest.raises(BadRequest, match="duplicates"):
        v.new_tool({"organization": "o", "name": "n", "aliases": ["a", "a"]})


def test_a_tool_edit_names_only_the_fields_it_changes() -> None:
    edit = v.tool_edit({"description": "d", "required_publisher_identities": []})
    assert edit.fields() == {"description": "d", "required_publisher_identities": []}
    assert v.tool_edit({}).fields() == {}


def test_a_verified_version_names_who_verified_it() -> None:
    assert v.verification({"verified": True, "verified_source": ["qa@example.org"]}) == v.Verification(
        True, ("qa@example.org",)
    )
    assert v.verification({"verified": False}) == v.Verification(False, ())
    with pytest.raises(BadRequest, match="verified_source must name who verified"):
        v.verification({"verified": True})


# ---------------------------------------------------------------- the validator is not vacuous
def test_official_schema_validator_refuses_bad_instances() -> None:
    assert {"Tool", "ToolVersion", "FileWrapper", "ToolFile", "ToolClass", "Error", "Service"} <= set(
        schema_names("trs")
    )
    tool = {"url": "u", "id": "x", "organization": "o", "toolclass": {}, "versions": [{"url": "u", "id": "1"}]}
    validate("trs", "Tool", tool)
    with pytest.raises(SchemaMismatch, match="'versions' is a required property"):
        validate("trs", "Tool", {k: val for k, val in tool.items() if k != "versions"})
    with pytest.raises(SchemaMismatch, match="at /versions/0"):
        validate("trs", "Tool", {**tool, "versions": [{"id": "1"}]})
    with pytest.raises(SchemaMismatch, match="'PLAIN' is not one of"):
        validate("trs", "ToolVersion", {"url": "u", "id": "1", "descriptor_type": ["PLAIN"]})
    with pytest.raises(SchemaMismatch, match="is not valid under any of the given schemas"):
        validate("trs", "FileWrapper", {"content": "", "image_type": "Podman"})
    with pytest.raises(SchemaMismatch, match="item 1"):
        validate_list("trs", "ToolClass", [{"id": "a"}, {"id": 5}])
    with pytest.raises(SchemaMismatch, match="'type' is a required property"):
        validate(
            "service-info",
            "Service",
            {"id": "a", "name": "b", "organization": {"name": "o", "url": "u"}, "version": "1"},
        )
    with pytest.raises(KeyError):
        validate("trs", "NoSuchSchema", {})
    with pytest.raises(KeyError):
        validate("nope", "Tool", {})


# ---------------------------------------------------------------- WDL descriptors
WDL_MAIN = 'version 1.1\nimport "tasks/count.wdl" as c\nworkflow w {\n  call c.count\n}\n'
WDL_TASK = "version 1.1\ntask count {\n  command <<< echo 1 >>>\n  output { Int n = read_int(stdout()) }\n}\n"


def _wdl(*files: tuple[str, str, str]) -> dict[str, object]:
    return _publish(
        descriptor_type="WDL",
        files=[{"path": p, "file_type": t, "content": c} for p, t, c in files],
    )


def test_wdl_descriptors_are_loaded_and_their_versions_recorded() -> None:
    spec = v.publish_spec(
        _wdl(("main.wdl", "PRIMARY_DESCRIPTOR", WDL_MAIN), ("tasks/count.wdl", "SECONDARY_DESCRIPTOR", WDL_TASK))
    )
    assert spec.descriptor_type_versions == {"WDL": ["1.1"]}
    assert {f.descriptor_type for f in spec.files} == {"WDL"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ((("main.wdl", "PRIMARY_DESCRIPTOR", WDL_MAIN),), "'tasks/count.wdl' (imported by main.wdl) is not among"),
        ((("main.wdl", "PRIMARY_DESCRIPTOR", "workflow w {}\n"),), "declares version 'draft-2'"),
        ((("main.wdl", "PRIMARY_DESCRIPTOR", "version 1.2\nworkflow w {}\n"),), "declares version '1.2'"),
        ((("main.wdl", "PRIMARY_DESCRIPTOR", "version 1.0\nworkflow w {"),), "invalid WDL document 'main.wdl'"),
        (
            (("main.wdl", "PRIMARY_DESCRIPTOR", 'version 1.0\nimport "/etc/passwd" as p\nworkflow w {}\n'),),
            "is an absolute path",
        ),
        (
            (("main.wdl", "PRIMARY_DESCRIPTOR", 'version 1.0\nimport "https://example.org/x.wdl"\nworkflow w {}\n'),),
            "is a URL",
        ),
        (
            (
                ("main.wdl", "PRIMARY_DESCRIPTOR", "version 1.0\nworkflow w {}\n"),
                ("extra.wdl", "SECONDARY_DESCRIPTOR", "version 1.0\ntask t { command <<< >>> output { Int x = y } }\n"),
            ),
            "WDL descriptor 'extra.wdl'",
        ),
    ],
)
def test_invalid_wdl_is_refused_before_anything_is_stored(
    files: tuple[tuple[str, str, str], ...], expected: str
) -> None:
    with pytest.raises(BadRequest) as info:
        v.publish_spec(_wdl(*files))
    assert expected in info.value.message and info.value.status == 400


def test_a_wdl_test_file_is_not_loaded_as_a_document() -> None:
    spec = v.publish_spec(
        _wdl(
            ("main.wdl", "PRIMARY_DESCRIPTOR", "version 1.0\nworkflow w {}\n"),
            ("tests/inputs.json", "TEST_FILE", '{"w.x": 1}'),
        )
    )
    assert spec.descriptor_type_versions == {"WDL": ["1.0"]}
