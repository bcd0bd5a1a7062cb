"""The analysts' view models (helixgate_ui.pages.runs_model) from API answers: filters and
paging of the runs list, the task timeline, evidence with expected vs actual checksums, the
refusal of a tampered input, outputs, and the submission form's parameter validation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.routing import BuildError

from helixgate.errors import BadRequest
from helixgate.wdl_documents import load_wdl
from helixgate_app.demo_assets import workflow_files
from helixgate_ui.pages import runs_model as m

A = "a" * 64
B = "b" * 64
NOW = datetime(2026, 11, 29, 16, 0, 10, tzinfo=timezone.utc)


def test_filter_from_query_keeps_valid_state_and_tags_and_reports_the_rest() -> None:
    f, errors = m.RunFilter.from_args(MultiDict([("state", "complete"), ("tag", "project:x"), ("tag", "bad")]))
    assert (f.state, f.tags, f.page_size) == ("COMPLETE", (("project", "x"),), 25)
    assert errors == ["tag filter must be key:value, got 'bad'"]
    assert f.api_params("tok") == {"page_size": 25, "state": "COMPLETE", "tag": ["project:x"], "page_token": "tok"}
    f, errors = m.RunFilter.from_args(MultiDict([("state", "DROP TABLE"), ("page_size", "100000")]))
    assert (f.state, f.page_size) == ("", 25) and errors == ["unknown state 'DROP TABLE'"]
    assert m.RunFilter.from_args(MultiDict([("page_size", "50")]))[0].api_params() == {"page_size": 50}
    assert m.RunFilter.from_args(MultiDict([("page_size", "2")]))[0].page_size == 2
    assert m.RunFilter.from_args(MultiDict([("page_size", "0")]))[0].page_size == 25


def test_run_list_rows_carry_state_badges_times_and_the_next_token() -> None:
    answer = {
        "runs": [
            {
                "run_id": "r1",
                "state": "COMPLETE",
                "start_time": "2026-11-29T16:00:00Z",
                "end_time": "2026-11-29T16:00:04.5Z",
                "tags": {"b": "2", "a": "1"},
            },
            {"run_id": "r2", "state": "EXECUTOR_ERROR", "start_time": "", "end_time": "", "tags": {}},
            {"state": "COMPLETE"},  # no id: not a row
        ],
        "next_page_token": "",
    }
    page = m.run_list(answer, NOW)
    assert [(r.run_id, r.state_class) for r in page.runs] == [("r1", "badge-ok"), ("r2", "badge-bad")]
    assert page.runs[0].start == "2026-11-29 16:00:00 UTC" and page.runs[0].took == "4.5 s"
    assert page.runs[0].tags == (("a", "1"), ("b", "2")) and page.next_page_token == ""


def _run_log(state: str = "EXECUTOR_ERROR", system_logs: list[str] | None = None) -> dict:
    return {
        "run_id": "r1",
        "state": state,
        "request": {
            "workflow_url": "trs://h/tool/1.0",
            "workflow_type": "CWL",
            "workflow_type_version": "v1.2",
            "workflow_params": {"text": {"class": "File", "location": "drs://h/o1"}},
            "tags": {"project": "x"},
        },
        "run_log": {"start_time": "2026-11-29T16:00:00Z", "system_logs": system_logs or []},
        "outputs": {
            "sorted": {"class": "File", "location": "drs://h/o2", "basename": "s.txt", "checksum": f"sha1${A}"}
        },
    }


TASKS = [
    {
        "id": "001-a",
        "name": "a",
        "start_time": "2026-11-29T16:00:00Z",
        "end_time": "2026-11-29T16:00:02Z",
        "exit_code": 0,
    },
    {"id": "002-b", "name": "b", "start_time": "2026-11-29T16:00:02Z", "end_time": "2026-11-29T16:00:04Z"},
]
EVIDENCE = [
    {
        "task_id": "001-a",
        "state": "COMPLETE",
        "image": {
            "reference": "reg/x:1",
            "verified": True,
            "image_id": "sha256:" + "c" * 64,
            "pinned_ref": "reg/x@sha256:" + "d" * 64,
            "signer": "key:abc",
            "tool_id": "tool",
            "version_id": "1.0",
        },
        "inputs": [{"path": "/in/t.txt", "source": "drs://h/o1", "expected": A, "actual": A}],
        "outputs": [{"path": "a.txt", "sha256": B, "size": 3}],
    },
    {
        "task_id": "002-b",
        "state": "EXECUTOR_ERROR",
        "image": {"reference": "reg/x:1", "verified": False},
        "inputs": [],
        "outputs": [],
        "refusal": {
            "message": "task 002-b refused before start: sha256 mismatch for input a.txt (task 001-a): "
            f"expected {B}, got {A}",
            "subject": "input a.txt",
            "expected": B,
            "actual": A,
        },
    },
]


def test_run_view_joins_tasks_with_their_evidence_on_a_timeline() -> None:
    view = m.run_view(_run_log(), TASKS, EVIDENCE, {"wes:read", "wes:cancel"}, NOW)
    a, b = view.tasks
    assert (a.bar, b.bar) == (m.Bar(0.0, 50.0), m.Bar(50.0, 50.0))
    assert a.image_verified and a.signer == "key:abc" and a.signed_tool == "tool 1.0"
    assert a.inputs == [m.InputCheck("/in/t.txt", "drs://h/o1", A, A, "match")]
    assert a.outputs == [{"path": "a.txt", "sha256": B, "size": 3}]
    assert not b.image_verified and b.refusal == m.Refusal(EVIDENCE[1]["refusal"]["message"], "input a.txt", B, A)
    assert b.state_class == "badge-bad"
    assert view.terminal and not view.can_cancel  # a finished run cannot be cancelled
    assert view.outputs == [m.OutputView(0, "sorted", "s.txt", "drs://h/o2", A)]
    assert '"location": "drs://h/o1"' in view.params_json and view.tags == (("project", "x"),)


def test_run_view_without_evidence_says_so_and_cancel_follows_state_and_permission() -> None:
    running = m.run_view(_run_log("RUNNING"), TASKS[:1], None, {"wes:read", "wes:cancel"}, NOW)
    assert not running.evidence_available and running.tasks[0].inputs == [] and running.can_cancel
    assert not m.run_view(_run_log("RUNNING"), [], None, {"wes:read"}, NOW).can_cancel  # a viewer
    assert not m.run_view(_run_log("CANCELING"), [], None, {"wes:cancel"}, NOW).can_cancel


def test_a_refusal_in_the_run_log_is_shown_with_expected_and_actual() -> None:
    line = (
        "image configuration digest recorded in TRS differs from the signed statement: "
        f"expected sha256:{A}, got sha256:{B}"
    )
    view = m.run_view(_run_log(system_logs=["started", line]), [], [], {"wes:read"}, NOW)
    assert view.refusals == [m.Refusal(line, "", f"sha256:{A}", f"sha256:{B}")]
    assert m.run_refusals(["worker w1 took the run"]) == []


def test_input_checks_mark_mismatches_and_legacy_records() -> None:
    checks = m._input_checks(
        [{"path": "p", "source": "s", "expected": A, "actual": B}, {"path": "q", "source": "s", "actual": A}]
    )
    assert [c.verdict for c in checks] == ["mismatch", "unrecorded"]


DESCRIPTOR = """cwlVersion: v1.2
class: Workflow
inputs:
  text: File
  lines: {type: int, label: how many}
  ratio: "float?"
  loud: boolean
  name: {type: string, default: x}
  pairs: {type: {type: array, items: string}}
outputs: {}
steps: {}
"""


def test_workflow_inputs_read_map_and_list_forms() -> None:
    specs = m.workflow_inputs(DESCRIPTOR)
    assert [(s.name, s.type, s.optional) for s in specs] == [
        ("text", "File", False),
        ("lines", "int", False),
        ("ratio", "float", True),
        ("loud", "boolean", False),
        ("name", "string", True),
        ("pairs", "json", False),
    ]
    listed = m.workflow_inputs("inputs:\n  - id: '#src'\n    type: ['null', File]\n")
    assert [(s.name, s.type, s.optional) for s in listed] == [("src", "File", True)]
    with pytest.raises(BadRequest):
        m.workflow_inputs("- just a list")
    with pytest.raises(BadRequest):
        m.workflow_inputs("inputs: [unterminated")


def test_params_are_validated_before_submission() -> None:
    specs = m.workflow_inputs(DESCRIPTOR)
    params, errors = m.validate_params(
        specs,
        {
            "in.text": "drs://h/o1",
            "in.lines": "3",
            "in.ratio": "",
            "in.loud": "on",
            "in.pairs": '["a", "b"]',
        },
    )
    assert errors == {}
    assert params == {
        "text": {"class": "File", "location": "drs://h/o1"},
        "lines": 3,
        "loud": True,
        "pairs": ["a", "b"],
    }
    assert m.file_inputs(params) == ["drs://h/o1"]
    _, errors = m.validate_params(
        specs, {"in.text": "/etc/passwd", "in.lines": "three", "in.ratio": "nan", "in.pairs": "[oops"}
    )
    assert errors == {
        "text": "pick a dataset object or give a drs:// URI",
        "lines": "'three' is not a whole number",
        "ratio": "the number must be finite",
        "pairs": 'not valid JSON for type {"type": "array", "items": "string"}',
    }
    _, errors = m.validate_params(specs, {"in.lines": "1", "in.pairs": "[]"})
    assert errors == {"text": "required"}  # optional, defaulted and boolean inputs may stay empty


def test_tool_and_object_choices_and_tags() -> None:
    tools = [
        {
            "id": "t1",
            "name": "kit",
            "organization": "lab",
            "versions": [{"id": "1", "descriptor_type": ["CWL"], "signed": True}],
        },
        {
            "id": "t2",
            "versions": [{"id": "1", "descriptor_type": ["WDL"], "descriptor_type_version": {"WDL": ["1.1"]}}],
        },
        {"id": "t3", "versions": [{"id": "2", "descriptor_type": ["CWL", "WDL"], "signed": True}]},
        {"id": "t4", "versions": [{"id": "1", "descriptor_type": ["NFL"]}]},
    ]
    assert m.tool_choices(tools) == [
        m.ToolChoice("t1", "kit", "lab", [("1", "1 (CWL)", True, "CWL")]),
        m.ToolChoice("t2", "t2", "", [("1", "1 (WDL 1.1)", False, "WDL")]),
        m.ToolChoice("t3", "t3", "", [("2", "2 (CWL)", True, "CWL"), ("2", "2 (WDL)", True, "WDL")]),
    ]
    groups = m.object_choices(
        [
            (
                {"name": "reads"},
                [
                    {
                        "id": "o1",
                        "name": "t.txt",
                        "size": 10,
                        "self_uri": "drs://h/o1",
                        "checksums": [{"type": "sha-256", "checksum": A}],
                    }
                ],
            )
        ]
    )
    assert groups == [("reads", [m.ObjectChoice("drs://h/o1", "t.txt (10 bytes, sha256 aaaaaaaaaaaa…)")])]
    assert m.parse_tags("project:x run:2") == ({"project": "x", "run": "2"}, "")
    assert m.parse_tags("oops")[1].startswith("tags must be key:value")


def test_landing_actions_follow_permissions_and_installed_pages() -> None:
    def url_for(name: str) -> str:
        return "/ui/" + name

    viewer = m.landing_actions({"wes:read", "trs:read", "drs:read"}, url_for)
    analyst = m.landing_actions({"wes:read", "wes:submit", "wes:cancel", "trs:read", "drs:read"}, url_for)
    assert [a.title for a in viewer] == ["Runs", "Tools", "Data"]
    assert [a.title for a in analyst] == ["Runs", "Submit a workflow", "Tools", "Data"]
    assert analyst[1].href == "/ui/ui.runs.new_run"
    assert "Audit trail" in [a.title for a in m.landing_actions({"audit:read"}, url_for)]

    def runs_only(name: str) -> str:
        if not name.startswith("ui.runs."):
            raise BuildError(name, {}, ("GET",))
        return "/ui/runs/"

    assert [a.title for a in m.landing_actions({"wes:read", "trs:read"}, runs_only)] == ["Runs"]


def test_safe_filename_and_tail() -> None:
    assert m.safe_filename("../../etc/pass wd") == "_.._etc_pass_wd"
    assert m.safe_filename("..") == "output"
    assert m.tail("abcdef", 3) == ("def", True) and m.tail("ab", 3) == ("ab", False)


def test_a_file_input_takes_the_picked_object_or_else_the_typed_uri() -> None:
    specs = m.workflow_inputs("inputs:\n  a: File\n  b: File\n")
    values = m.form_values(specs, {"in.a": "drs://h/1", "uri.a": "drs://h/9", "in.b": "", "uri.b": "drs://h/2"})
    assert m.validate_params(specs, values) == (
        {"a": {"class": "File", "location": "drs://h/1"}, "b": {"class": "File", "location": "drs://h/2"}},
        {},
    )


WDL_DOC = b"""version 1.1
workflow w {
  input {
    File reads
    Int n
    Boolean? loud
    Boolean strict = true
    Array[File] more = []
    String label = "x"
    Float? ratio
  }
}
"""


def test_wdl_inputs_are_read_from_the_loaded_document_with_their_types_and_defaults() -> None:
    specs = m.wdl_inputs(load_wdl({"w.wdl": WDL_DOC}, "w.wdl"))
    assert [(s.name, s.type, s.optional, s.declared, s.default, s.param) for s in specs] == [
        ("reads", "File", False, "File", None, "w.reads"),
        ("n", "int", False, "Int", None, "w.n"),
        ("loud", "boolean", True, "Boolean?", None, "w.loud"),
        ("strict", "boolean", True, "Boolean", True, "w.strict"),
        ("more", "json", True, "Array[File]", None, "w.more"),
        ("label", "string", True, "String", "x", "w.label"),
        ("ratio", "float", True, "Float?", None, "w.ratio"),
    ]
    assert all(s.language == "WDL" for s in specs)
    # the demo workflow (an import among TRS's files): one required File
    demo = load_wdl({k: v.encode() for k, v in workflow_files("busybox:1", "wdl").items()}, "workflow.wdl")
    assert [(s.name, s.type, s.optional, s.param) for s in m.wdl_inputs(demo)] == [
        ("text", "File", False, "textkit.text")
    ]
    assert m.wdl_type_version(demo) == "1.0"


def test_wdl_params_are_plain_values_checked_by_miniwdl_before_submission() -> None:
    doc = load_wdl({"w.wdl": WDL_DOC}, "w.wdl")
    specs = m.wdl_inputs(doc)
    values = m.form_values(specs, {"in.reads": "", "uri.reads": "drs://h/o1", "in.n": "3", "in.loud": ""})
    params, errors = m.validate_params(specs, values)
    # optional inputs left empty stay unset (a WDL Boolean? is not forced to false)
    assert (params, errors) == ({"w.reads": "drs://h/o1", "w.n": 3}, {})
    assert m.check_wdl_params(doc, specs, params) == {}
    assert m.file_params(specs, params) == [("reads", "drs://h/o1")]
    params, _ = m.validate_params(specs, {"in.reads": "drs://h/o1", "in.n": "1", "in.loud": "false"})
    assert params["w.loud"] is False
    # a host path is refused by check_inputs, on the field it names, and is never checked in DRS
    params, errors = m.validate_params(specs, {"in.reads": "/etc/passwd", "in.n": "1"})
    assert errors == {} and m.file_params(specs, params) == []
    assert m.check_wdl_params(doc, specs, params) == {
        "reads": "input 'reads': File '/etc/passwd' must be a drs:// object or one of the run's attached"
        " files (host paths are never read)"
    }
    # a JSON value of the wrong WDL type: miniwdl's message, on the field it names
    params, errors = m.validate_params(specs, {"in.reads": "drs://h/o1", "in.n": "1", "in.more": "[1]"})
    assert errors == {}
    err = m.check_wdl_params(doc, specs, params)
    assert list(err) == ["more"] and "couldn't construct 'File' from 1" in err["more"]
    # a message naming no input goes on the form
    assert list(m.check_wdl_params(doc, specs, {"w.reads": "drs://h/o1"})) == ["_form"]
    _, errors = m.validate_params(specs, {"in.n": "x"})
    assert errors == {"reads": "required", "n": "'x' is not a whole number"}


def test_wdl_files_of_a_trs_version() -> None:
    listing = [
        {"path": "workflow.wdl", "file_type": "PRIMARY_DESCRIPTOR"},
        {"path": "lib/tasks.wdl", "file_type": "SECONDARY_DESCRIPTOR"},
        {"path": "test.json", "file_type": "TEST_FILE"},
        "junk",
    ]
    assert m.wdl_files(listing) == ("workflow.wdl", ["workflow.wdl", "lib/tasks.wdl"])
    with pytest.raises(BadRequest, match="0 WDL primary descriptors"):
        m.wdl_files([{"path": "tasks.wdl", "file_type": "SECONDARY_DESCRIPTOR"}])
    with pytest.raises(BadRequest, match="at most"):
        m.wdl_files(
            [
                {"path": f"{i}.wdl", "file_type": "PRIMARY_DESCRIPTOR" if i == 0 else "SECONDARY_DESCRIPTOR"}
                for i in range(m.MAX_WDL_FILES + 1)
            ]
        )
