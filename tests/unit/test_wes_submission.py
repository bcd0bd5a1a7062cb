from __future__ import annotations

import pytest

from helixgate.errors import BadRequest, PayloadTooLarge
from wes_server.submission import drs_inputs, parse_run_request, refuse_local_inputs, safe_attachment_path

FORM = {"workflow_type": "cwl", "workflow_type_version": "v1.2", "workflow_url": "wf.cwl"}


def test_workflow_type_is_case_insensitive_and_version_normalised() -> None:
    req = parse_run_request({**FORM, "workflow_type_version": "1.0"}, [], max_attachment_bytes=100)
    assert req.workflow_type == "CWL" and req.workflow_type_version == "v1.0"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workflow_type", "NFL", "unsupported workflow_type"),
        ("workflow_type_version", "v2.0", "unsupported workflow_type_version"),
        ("workflow_url", "", "workflow_url is required"),
        ("workflow_params", "{bad", "workflow_params is not valid JSON"),
        ("workflow_params", "[1]", "must be a JSON object"),
        ("tags", '"x"', "tags must be a JSON object"),
        ("workflow_engine", "toil", "unsupported workflow_engine"),
        ("workflow_engine_parameters", '{"--no-container": ""}', "not supported"),
    ],
)
def test_bad_fields_are_refused_with_a_clear_message(field: str, value: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_run_request({**FORM, field: value}, [], max_attachment_bytes=100)


@pytest.mark.parametrize(
    "name", ["../x.cwl", "/etc/passwd", "a/../../b", "a//b", "C:\\x", "a\\b", "x\x00.cwl", "./x", "", "a/./b"]
)
def test_attachment_traversal_is_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        safe_attachment_path(name)


def test_nested_attachment_paths_are_kept() -> None:
    assert safe_attachment_path("tools/sub/step.cwl") == "tools/sub/step.cwl"


def test_attachment_size_limit() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_run_request(FORM, [("a", b"x" * 60), ("b", b"y" * 60)], max_attachment_bytes=100)


def test_duplicate_attachment_refused() -> None:
    with pytest.raises(BadRequest, match="duplicate"):
        parse_run_request(FORM, [("a", b"x"), ("a", b"y")], max_attachment_bytes=100)


def test_drs_inputs_are_found_anywhere_in_params() -> None:
    params = {
        "reads": {"class": "File", "location": "drs://h:1/abc"},
        "more": [{"class": "File", "location": "drs://h:1/def"}, "drs://h:1/abc"],
    }
    assert [(r.uri, r.object_id) for r in drs_inputs(params)] == [("drs://h:1/abc", "abc"), ("drs://h:1/def", "def")]
    with pytest.raises(BadRequest, match="malformed DRS URI"):
        drs_inputs({"x": "drs://h/a/b"})


@pytest.mark.parametrize("spelling", ["DRS://H:1/abc", "Drs://h:1/abc", "dRs://h:1/abc"])
def test_drs_scheme_and_host_are_case_insensitive(spelling: str) -> None:
    """RFC 3986: every spelling is the same reference and is checked like the canonical one."""
    assert [(r.uri, r.object_id) for r in drs_inputs({"x": spelling})] == [("drs://h:1/abc", "abc")]


@pytest.mark.parametrize("spelling", [" drs://h:1/abc", "\tdrs://h:1/abc", "drs://h:1/abc\n", "\x00drs://h:1/abc"])
def test_drs_references_with_surrounding_whitespace_are_refused(spelling: str) -> None:
    with pytest.raises(BadRequest, match="whitespace"):
        drs_inputs({"x": spelling})


def test_client_local_and_unverifiable_inputs_are_refused() -> None:
    refuse_local_inputs({"x": {"location": "file:///data/wf.cwl"}}, {"wf.cwl"})  # attached: fine
    with pytest.raises(BadRequest, match="not accessible"):
        refuse_local_inputs({"x": {"location": "file:///home/me/reads.fq"}}, set())
    with pytest.raises(BadRequest, match="not accessible"):
        refuse_local_inputs({"x": {"location": "https://example.org/reads.fq"}}, set())


# --- WDL -------------------------------------------------------------------------------------
WDL_FORM = {"workflow_type": "WDL", "workflow_type_version": "1.0", "workflow_url": "main.wdl"}
WDL_MAIN = b"""version 1.0
workflow wf {
  input { Array[File] xs }
  output { Int n = length(xs) }
}
"""


@pytest.mark.parametrize(("given", "canonical"), [("1.0", "1.0"), ("v1.0", "1.0"), ("1.1", "1.1"), ("V1.1", "1.1")])
def test_wdl_versions_are_spelled_as_wdl_spells_them(given: str, canonical: str) -> None:
    req = parse_run_request(
        {**WDL_FORM, "workflow_type": "wdl", "workflow_type_version": given}, [], max_attachment_bytes=100
    )
    assert (req.workflow_type, req.workflow_type_version, req.workflow_engine) == ("WDL", canonical, "miniwdl")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "workflow_type_version",
            "draft-2",
            "unsupported workflow_type_version 'draft-2' for WDL; supported: 1.0, 1.1",
        ),
        ("workflow_type_version", "1.2", "supported: 1.0, 1.1"),
        ("workflow_type_version", "", "unsupported workflow_type_version '(missing)'"),
        ("workflow_engine", "cwltool", "unsupported workflow_engine 'cwltool' for WDL; supported: miniwdl"),
        ("workflow_engine", "cromwell", "supported: miniwdl"),
    ],
)
def test_wdl_fields_are_refused_naming_the_problem(field: str, value: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_run_request({**WDL_FORM, field: value}, [], max_attachment_bytes=100)
    assert message in info.value.message


def test_cwl_engine_is_not_accepted_for_wdl_nor_miniwdl_for_cwl() -> None:
    with pytest.raises(BadRequest, match="supported: cwltool"):
        parse_run_request({**FORM, "workflow_engine": "miniwdl"}, [], max_attachment_bytes=100)


def test_engine_versions_are_the_installed_distributions() -> None:
    from importlib.metadata import version

    from wes_server.submission import engine_versions

    assert engine_versions() == {"cwltool": version("cwltool"), "miniwdl": version("miniwdl")}


def _wdl_request(params: str, files: list[tuple[str, bytes]], version: str = "1.0"):  # type: ignore[no-untyped-def]
    form = {**WDL_FORM, "workflow_type_version": version, "workflow_params": params}
    return parse_run_request(form, files, max_attachment_bytes=10_000)


def test_check_wdl_run_accepts_drs_and_attached_files() -> None:
    from wes_server.submission import check_wdl_run

    req = _wdl_request('{"wf.xs": ["drs://h/a", "data/r.txt"]}', [("main.wdl", WDL_MAIN), ("data/r.txt", b"x")])
    check_wdl_run(req, "main.wdl")


@pytest.mark.parametrize(
    ("params", "files", "version", "message"),
    [
        (
            '{"xs": []}',
            [("main.wdl", WDL_MAIN)],
            "1.1",
            "workflow_type_version is 1.1 but main.wdl declares version 1.0",
        ),
        ('{"xs": ["/etc/passwd"]}', [("main.wdl", WDL_MAIN)], "1.0", "File '/etc/passwd' must be a drs:// object"),
        ("{}", [("main.wdl", WDL_MAIN)], "1.0", "missing required inputs"),
        ('{"xs": [], "ys": 1}', [("main.wdl", WDL_MAIN)], "1.0", "'ys' is not an input of wf"),
        (
            '{"xs": []}',
            [("main.wdl", b'version 1.0\nimport "/etc/x.wdl"\nworkflow wf {}\n')],
            "1.0",
            "is an absolute path",
        ),
        ('{"xs": []}', [("main.wdl", b"version 1.0\nworkflow wf {")], "1.0", "invalid WDL document 'main.wdl'"),
    ],
)
def test_check_wdl_run_refusals_name_the_problem(params: str, files, version: str, message: str) -> None:  # type: ignore[no-untyped-def]
    from wes_server.submission import check_wdl_run

    with pytest.raises(BadRequest) as info:
        check_wdl_run(_wdl_request(params, files, version), "main.wdl")
    assert message in info.value.message and info.value.status == 400
