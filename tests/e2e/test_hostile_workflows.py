"""Workflows are untrusted code: a catalogue of hostile workflows on the real stack.

Every one is refused at submission (400 in the WES error shape, naming the reference) or
contained at execution; no host content (a secret marker planted in the data directory and
in the server's environment, /etc/passwd, the issuer's private key) appears in any output,
log, task command or error message."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from tests.e2e.conftest import World

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WES = "/ga4gh/wes/v1"
MARKER = "HG-SECRET-" + uuid.uuid4().hex
ENV_MARKER = "HG-ENV-SECRET-" + uuid.uuid4().hex
PASSWD_LINE = "root:x:0:0"


@pytest.fixture()
def hw(world_factory: Callable[..., World]) -> World:
    # a short expression time limit keeps the runaway-expression cases quick
    w = world_factory({"HELIXGATE_EXPRESSION_TIME_LIMIT": "3", "HELIXGATE_TEST_SECRET_MARKER": ENV_MARKER})
    (w.server.data_dir / "secret.txt").write_text(MARKER + "\n")
    (w.server.data_dir / "secret.yml").write_text(f"marker: {MARKER}\n")
    return w


def _issuer_key(w: World) -> Path:
    key = w.server.data_dir / "issuer" / "signing-key.pem"
    assert key.exists()  # the server minted tokens with it
    return key


def _tool(image: str, body: str, version: str = "v1.2") -> str:
    return (
        f"cwlVersion: {version}\nclass: CommandLineTool\nrequirements:\n"
        f'  DockerRequirement: {{dockerPull: "{image}"}}\n{body}'
    )


def _post(w: World, main: str, attachments: dict[str, str], params: dict[str, Any] | None = None) -> requests.Response:
    token = w.server.user("ann", "analyst")
    form = {
        "workflow_url": main,
        "workflow_type": "CWL",
        "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(params or {}),
    }
    parts: list[tuple[str, tuple[str | None, Any]]] = [(k, (None, v)) for k, v in form.items()]  # always multipart
    parts += [("workflow_attachment", (name, content.encode())) for name, content in attachments.items()]
    return requests.post(
        f"{w.server.url}{WES}/runs", files=parts, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def _assert_no_host_content(w: World, *texts: str) -> None:
    key_body = _issuer_key(w).read_text().splitlines()[1]  # a line of the base64 key material
    for text in texts:
        assert MARKER not in text
        assert ENV_MARKER not in text
        assert PASSWD_LINE not in text
        assert key_body not in text


def _everything_about(w: World, run_id: str) -> list[str]:
    """Run log, tasks (commands, logs), run and task streams, outputs' bytes."""
    log = w.analyst.run_log(run_id)
    tasks = w.analyst.run_tasks(run_id)
    texts = [json.dumps(log), json.dumps(tasks)]
    texts += [w.analyst.run_stream(run_id, s) for s in ("stdout", "stderr")]
    for t in tasks:
        texts += [w.analyst.run_stream(run_id, s, task_id=t["id"]) for s in ("stdout", "stderr")]

    def downloads(value: Any) -> None:
        if isinstance(value, dict):
            loc = value.get("location")
            if isinstance(loc, str) and loc.startswith("drs://"):
                texts.append(b"".join(w.analyst.download(loc.rsplit("/", 1)[-1])).decode("utf-8", "replace"))
            for v in value.values():
                downloads(v)
        elif isinstance(value, list):
            for v in value:
                downloads(v)

    downloads(log.get("outputs"))
    return texts


# --------------------------------------------------------------------------- refused at submission
def _submission_cases(w: World) -> list[tuple[str, dict[str, str], dict[str, Any], str]]:
    """(case id, attachments, params, the reference the 400 must name)."""
    img = w.image.pinned_ref
    data = str(w.server.data_dir)
    secret = f"{data}/secret.txt"
    key = str(_issuer_key(w))
    echo_f = (
        "baseCommand: [cat]\ninputs:\n  f: {type: File, inputBinding: {position: 1}, loadContents: true}\n"
        "outputs:\n  out: stdout\n"
    )
    echo_d = (
        "baseCommand: [ls]\ninputs:\n  d: {type: Directory, inputBinding: {position: 1}}\noutputs:\n  out: stdout\n"
    )

    def wf_step(run: str) -> str:
        return (
            "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\n"
            f"steps:\n  s:\n    run: {run}\n    in: []\n    out: []\n"
        )

    def include(ref: str) -> str:
        return _tool(
            img, f"baseCommand: [echo]\narguments:\n  - $include: {ref}\ninputs: []\noutputs:\n  out: stdout\n"
        )

    def default(obj: dict[str, Any], body: str = echo_f, name: str = "f") -> str:
        return _tool(img, body.replace(f"  {name}: {{", f"  {name}: {{default: {json.dumps(obj)}, ", 1))

    return [
        ("include-absolute", {"t.cwl": include(secret)}, {}, secret),
        ("include-dotdot", {"t.cwl": include("../../../../../../../../etc/passwd")}, {}, "/etc/passwd"),
        ("include-file-uri", {"t.cwl": include(f"file://{key}")}, {}, key),
        (
            "import-absolute",
            {"t.cwl": _tool(img, f"baseCommand: [echo]\ninputs:\n  $import: {data}/secret.yml\noutputs: []\n")},
            {},
            f"{data}/secret.yml",
        ),
        (
            "import-http",
            {"t.cwl": _tool(img, "baseCommand: [echo]\ninputs:\n  $import: http://127.0.0.1:9/x.yml\noutputs: []\n")},
            {},
            "http://127.0.0.1:9/x.yml",
        ),
        (
            "schemas-file",
            {
                "t.cwl": "$schemas: [file:///etc/passwd]\n"
                + _tool(img, "baseCommand: [echo]\ninputs: []\noutputs: []\n")
            },
            {},
            "/etc/passwd",
        ),
        ("run-absolute", {"w.cwl": wf_step(secret)}, {}, secret),
        ("run-dotdot", {"w.cwl": wf_step("../../secret.cwl")}, {}, "secret.cwl"),
        ("run-file-uri", {"w.cwl": wf_step("file:///etc/passwd")}, {}, "/etc/passwd"),
        ("run-https", {"w.cwl": wf_step("https://example.org/tool.cwl")}, {}, "https://example.org/tool.cwl"),
        ("default-absolute-loadcontents", {"t.cwl": default({"class": "File", "location": secret})}, {}, secret),
        ("default-path-passwd", {"t.cwl": default({"class": "File", "path": "/etc/passwd"})}, {}, "/etc/passwd"),
        ("default-file-uri-issuer-key", {"t.cwl": default({"class": "File", "location": f"file://{key}"})}, {}, key),
        (
            "default-secondary-files",
            {
                "t.cwl": default(
                    {
                        "class": "File",
                        "location": "t.cwl",
                        "secondaryFiles": [{"class": "File", "location": "/etc/passwd"}],
                    }
                )
            },
            {},
            "/etc/passwd",
        ),
        ("default-data-directory", {"t.cwl": default({"class": "Directory", "location": data}, echo_d, "d")}, {}, data),
        (
            "param-absolute-loadcontents",
            {"t.cwl": _tool(img, echo_f)},
            {"f": {"class": "File", "location": secret}},
            secret,
        ),
        (
            "param-path-passwd",
            {"t.cwl": _tool(img, echo_f)},
            {"f": {"class": "File", "path": "/etc/passwd"}},
            "/etc/passwd",
        ),
        (
            "param-dotdot",
            {"t.cwl": _tool(img, echo_f)},
            {"f": {"class": "File", "location": "../../secret.txt"}},
            "../../secret.txt",
        ),
        (
            "param-file-uri-issuer-key",
            {"t.cwl": _tool(img, echo_f)},
            {"f": {"class": "File", "location": f"file://{key}"}},
            key,
        ),
        (
            "param-secondary-files",
            {"t.cwl": _tool(img, echo_f)},
            {
                "f": {
                    "class": "File",
                    "location": "t.cwl",
                    "secondaryFiles": [{"class": "File", "location": f"file://{key}"}],
                }
            },
            key,
        ),
        ("param-directory", {"t.cwl": _tool(img, echo_d)}, {"d": {"class": "Directory", "location": data}}, data),
        (
            "param-http",
            {"t.cwl": _tool(img, echo_f)},
            {"f": {"class": "File", "location": "http://127.0.0.1:9/x"}},
            "http://127.0.0.1:9/x",
        ),
    ]


def test_hostile_references_are_refused_at_submission(hw: World) -> None:
    token = hw.server.user("ann", "analyst")

    def runs() -> list[Any]:
        r = requests.get(f"{hw.server.url}{WES}/runs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return list(r.json()["runs"])

    before = runs()
    for case, attachments, params, reference in _submission_cases(hw):
        main = next(iter(attachments))
        r = _post(hw, main, attachments, params)
        assert r.status_code == 400, (case, r.status_code, r.text)
        body = r.json()
        assert body["status_code"] == 400 and set(body) >= {"msg", "status_code"}, (case, body)
        assert reference in body["msg"], (case, body["msg"])
        assert "refused" in body["msg"] or "not accessible" in body["msg"], (case, body["msg"])
        _assert_no_host_content(hw, r.text)
    assert runs() == before  # nothing was queued
    _assert_no_host_content(hw, hw.server.log())


def test_hostile_trs_descriptors_are_refused_at_submission(hw: World) -> None:
    """A signed TRS version is still untrusted code: its descriptors get the same loader."""
    secret = f"{hw.server.data_dir}/secret.txt"
    tag_ref = f"{hw.image.repository}:{hw.image.tag}"
    hostile = {
        "workflow.cwl": (
            "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\n"
            "steps:\n  s:\n    run: tool.cwl\n    in: []\n    out: []\n"
        ),
        "tool.cwl": _tool(
            tag_ref, f"baseCommand: [echo]\narguments:\n  - $include: {secret}\ninputs: []\noutputs: []\n"
        ),
    }
    hw.dev.publish_version(hw.tool_id, "6.6.6", hostile, [tag_ref], primary="workflow.cwl")
    r = _post(hw, f"trs://{hw.drs_host}/{hw.tool_id}/6.6.6", {})
    assert r.status_code == 400, r.text
    assert secret in r.json()["msg"] and "refused" in r.json()["msg"]
    _assert_no_host_content(hw, r.text, hw.server.log())


def test_relative_references_inside_the_run_still_work(hw: World) -> None:
    """CWL conformance: $include, $import, run: and File defaults relative to the run's own files."""
    img = hw.image.pinned_ref
    tool = _tool(
        img,
        "baseCommand: [echo]\n"
        "arguments:\n  - $include: parts/greeting.txt\n  - $(inputs.f.contents)\n"
        "inputs:\n  $import: parts/inputs.yml\n"
        "outputs:\n  out: stdout\nstdout: said.txt\n",
    )
    workflow = (
        "cwlVersion: v1.2\nclass: Workflow\nrequirements: {InlineJavascriptRequirement: {}}\n"
        "inputs: []\noutputs:\n  said: {type: File, outputSource: s/out}\n"
        "steps:\n  s:\n    run: tools/say.cwl\n    in: []\n    out: [out]\n"
    )
    attachments = {
        "main.cwl": workflow,
        "tools/say.cwl": tool.replace("requirements:\n", "requirements:\n  InlineJavascriptRequirement: {}\n"),
        "tools/parts/greeting.txt": "hello",
        "tools/parts/inputs.yml": (
            "- {id: f, type: File, loadContents: true, default: {class: File, location: name.txt}}\n"
        ),
        "tools/parts/name.txt": "world",
    }
    r = _post(hw, "main.cwl", attachments)
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    assert hw.analyst.wait(run_id, timeout=180) == "COMPLETE", (hw.analyst.run_log(run_id), hw.server.log()[-3000:])
    out = hw.analyst.run_log(run_id)["outputs"]["said"]
    assert b"".join(hw.analyst.download(out["location"].rsplit("/", 1)[-1])) == b"hello world\n"


# --------------------------------------------------------------------------- contained at execution
ESCAPE = 'var p = globalThis.constructor.constructor("return process")();'


def _expression_tool(img: str, expression: str) -> str:
    return _tool(
        img,
        "  InlineJavascriptRequirement: {}\n"
        f"baseCommand: [echo]\narguments:\n  - {json.dumps('${ ' + expression + ' }')}\ninputs: []\n"
        "outputs:\n  out: stdout\nstdout: o.txt\n",
    )


def _execution_cases(w: World) -> list[tuple[str, str, str | None]]:
    """(case id, expression body, what the run log must say when it fails; None: may succeed)."""
    secret = f"{w.server.data_dir}/secret.txt"
    key = str(_issuer_key(w))
    return [
        ("env", f"{ESCAPE} return JSON.stringify(p.env);", None),
        ("fs-secret", f'{ESCAPE} return p.getBuiltinModule("fs").readFileSync("{secret}", "utf8");', "ENOENT"),
        ("fs-issuer-key", f'{ESCAPE} return p.getBuiltinModule("fs").readFileSync("{key}", "utf8");', "ENOENT"),
        ("fs-passwd", f'{ESCAPE} return p.getBuiltinModule("fs").readFileSync("/etc/passwd", "utf8");', "ENOENT"),
        ("fs-list-root", f'{ESCAPE} return p.getBuiltinModule("fs").readdirSync("/").join(",");', None),
        ("require-fs", f'{ESCAPE} return p.mainModule.require("fs").readFileSync("{secret}", "utf8");', "Error"),
        (
            "child-process",
            f'{ESCAPE} return p.getBuiltinModule("child_process").execSync("cat {secret}").toString();',
            "EPERM",
        ),
        ("network", f'{ESCAPE} var n = p.getBuiltinModule("net"); return typeof n.connect;', None),
        ("infinite-loop", "while (true) {}", "time limit"),
        ("unbounded-allocation", "var a = []; while (true) { a.push(new Array(1e6).fill(1)); }", "memory limit"),
    ]


def test_expression_escapes_and_runaway_expressions_are_contained(hw: World) -> None:
    img = hw.image.pinned_ref
    run_ids = {}
    for case, expression, _ in _execution_cases(hw):
        r = _post(hw, "t.cwl", {"t.cwl": _expression_tool(img, expression)})
        assert r.status_code == 200, (case, r.text)
        run_ids[case] = r.json()["run_id"]
    for case, _, failure in _execution_cases(hw):
        run_id = run_ids[case]
        state = hw.analyst.wait(run_id, timeout=300)
        texts = _everything_about(hw, run_id)
        _assert_no_host_content(hw, *texts)
        if failure is not None:
            assert state == "EXECUTOR_ERROR", (case, state, texts[0], hw.server.log()[-4000:])
            assert failure in "\n".join(texts), (case, texts[0][:3000])
        if case == "env" and state == "COMPLETE":
            out = hw.analyst.run_log(run_id)["outputs"]["out"]
            env = json.loads(b"".join(hw.analyst.download(out["location"].rsplit("/", 1)[-1])))
            assert set(env) <= {"PWD"}  # the sandbox has no environment
        if case == "fs-list-root" and state == "COMPLETE":
            out = hw.analyst.run_log(run_id)["outputs"]["out"]
            listing = b"".join(hw.analyst.download(out["location"].rsplit("/", 1)[-1])).decode().strip().split(",")
            assert "etc" not in listing and "home" not in listing and "root" not in listing, listing
    _assert_no_host_content(hw, hw.server.log())


def test_expression_made_file_references_are_refused_at_execution(hw: World) -> None:
    """A File built by an expression at run time (no submission check can see it) that
    names a host file: loadContents and staging refuse it; the refusal is a security event."""
    img = hw.image.pinned_ref
    secret = f"{hw.server.data_dir}/secret.txt"
    reader = _tool(
        img,
        "baseCommand: [echo]\ninputs:\n"
        "  f: {type: File, loadContents: true, inputBinding: {valueFrom: $(self.contents)}}\n"
        "outputs:\n  out: stdout\n",
    )
    workflow = (
        "cwlVersion: v1.2\nclass: Workflow\n"
        "requirements: {StepInputExpressionRequirement: {}, InlineJavascriptRequirement: {}}\n"
        "inputs: []\noutputs: []\n"
        'steps:\n  s:\n    run: reader.cwl\n    in:\n      f: {valueFrom: \'${return {"class": "File", "location": "file://'
        + secret
        + "\"};}'}\n    out: [out]\n"
    )
    r = _post(hw, "main.cwl", {"main.cwl": workflow, "reader.cwl": reader})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    assert hw.analyst.wait(run_id, timeout=180) == "EXECUTOR_ERROR"
    texts = _everything_about(hw, run_id)
    _assert_no_host_content(hw, *texts, hw.server.log())
    assert "refused" in texts[0] and "secret.txt" in texts[0], texts[0]
    auditor = {"Authorization": f"Bearer {hw.server.user('audrey', 'auditor')}"}
    events = requests.get(
        f"{hw.server.url}/helixgate/v1/audit/events",
        params={"category": "security", "page_size": 200},
        headers=auditor,
        timeout=30,
    )
    assert events.status_code == 200, events.text
    assert any(
        e["action"] == "integrity.failed" and run_id in json.dumps(e) and "refused" in json.dumps(e)
        for e in events.json()["events"]
    ), events.json()["events"][:5]
