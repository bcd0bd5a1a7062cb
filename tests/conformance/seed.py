"""Seed a running HelixGate with one of everything GA4GH clients read: a published, signed
TRS tool version (with a test file), an uploaded DRS object and a completed WES run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests

# A two-file CWL workflow (attached, not fetched): the step is an ExpressionTool, so the run
# completes without a container and has outputs for clients to read.
WORKFLOW = """cwlVersion: v1.2
class: Workflow
requirements: {InlineJavascriptRequirement: {}}
inputs: {message: string}
outputs:
  shout: {type: string, outputSource: upper/out}
steps:
  upper: {run: upper.cwl, in: {message: message}, out: [out]}
"""
UPPER_STEP = """cwlVersion: v1.2
class: ExpressionTool
requirements: {InlineJavascriptRequirement: {}}
inputs: {message: string}
outputs: {out: string}
expression: '$({"out": inputs.message.toUpperCase()})'
"""
ECHO_TOOL = """cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
baseCommand: [echo]
inputs:
  message: {{type: string, inputBinding: {{position: 1}}}}
outputs:
  out: stdout
stdout: out.txt
"""
# A WDL 1.1 workflow with an import and a scatter whose task runs in the seeded tool's signed
# image on the DRS object: a WDL run with task logs and File outputs for clients to read.
WDL_WORKFLOW = """version 1.1
import "echo.wdl" as e
workflow shout {
  input {
    Array[String] messages
    File reads
  }
  scatter (m in messages) {
    call e.echo { input: message = m, reads = reads }
  }
  output { Array[File] said = echo.out }
}
"""
WDL_ECHO = """version 1.1
task echo {
  input {
    String message
    File reads
  }
  command <<<
    echo '~{message}' && wc -c < '~{reads}'
  >>>
  output { File out = stdout() }
  runtime { container: "{image}" }
}
"""
OBJECT_BYTES = b"ACGT" * 1024 + b"\n"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


@dataclass
class Seeded:
    url: str
    tokens: dict[str, str]  # role name -> bearer token (developer, steward, analyst, viewer)
    tool_id: str
    version_id: str
    image_ref: str
    object_id: str
    object_sha256: str
    run_id: str
    run_state: str
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str = "analyst") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    @property
    def drs_uri(self) -> str:
        return f"drs://{self.url.split('://', 1)[1]}/{self.object_id}"


def _ok(r: requests.Response, what: str, *codes: int) -> dict[str, Any]:
    if r.status_code not in (codes or (200, 201)):
        raise AssertionError(f"seeding: {what} answered {r.status_code}: {r.text[:500]}")
    body: dict[str, Any] = r.json()
    return body


def publish_tool(
    url: str, token: str, image_ref: str, *, name: str = "echo", version: str = "1.0.0"
) -> tuple[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    tool = _ok(
        requests.post(
            f"{url}/ga4gh/trs/v2/x-helixgate/tools",
            headers=h,
            json={"organization": "org.conformance", "name": name, "description": "echo a message"},
            timeout=30,
        ),
        "create tool",
    )
    files = [
        {"path": "echo.cwl", "content": ECHO_TOOL.format(image=image_ref), "file_type": "PRIMARY_DESCRIPTOR"},
        {"path": "tests/echo.json", "content": json.dumps({"message": "hello"}), "file_type": "TEST_FILE"},
    ]
    _ok(
        requests.post(
            f"{url}/ga4gh/trs/v2/x-helixgate/tools/{tool['id']}/versions",
            headers=h,
            json={"id": version, "files": files, "images": [image_ref]},
            timeout=120,
        ),
        "publish version",
    )
    return str(tool["id"]), version


def upload_object(url: str, token: str, content: bytes = OBJECT_BYTES, *, name: str = "reads.txt") -> dict[str, Any]:
    return _ok(
        requests.post(
            f"{url}/ga4gh/drs/v1/x-helixgate/objects",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
            params={"name": name, "mime_type": "text/plain"},
            data=content,
            timeout=60,
        ),
        "upload object",
    )


def submit_run(url: str, token: str, message: str = "hello") -> str:
    r = requests.post(
        f"{url}/ga4gh/wes/v1/runs",
        headers={"Authorization": f"Bearer {token}"},
        files=[("workflow_attachment", ("main.cwl", WORKFLOW)), ("workflow_attachment", ("upper.cwl", UPPER_STEP))],
        data={
            "workflow_type": "CWL",
            "workflow_type_version": "v1.2",
            "workflow_url": "main.cwl",
            "workflow_params": json.dumps({"message": message}),
            "tags": json.dumps({"purpose": "conformance"}),
        },
        timeout=60,
    )
    return str(_ok(r, "submit run", 200)["run_id"])


def submit_wdl_run(url: str, token: str, image_ref: str, reads_uri: str) -> str:
    r = requests.post(
        f"{url}/ga4gh/wes/v1/runs",
        headers={"Authorization": f"Bearer {token}"},
        files=[
            ("workflow_attachment", ("shout.wdl", WDL_WORKFLOW)),
            ("workflow_attachment", ("echo.wdl", WDL_ECHO.replace("{image}", image_ref))),
        ],
        data={
            "workflow_type": "WDL",
            "workflow_type_version": "1.1",
            "workflow_url": "shout.wdl",
            "workflow_params": json.dumps({"shout.messages": ["hello", "wdl"], "shout.reads": reads_uri}),
            "tags": json.dumps({"purpose": "conformance", "language": "wdl"}),
        },
        timeout=60,
    )
    return str(_ok(r, "submit WDL run", 200)["run_id"])


def wait_for_run(url: str, token: str, run_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = _ok(
            requests.get(f"{url}/ga4gh/wes/v1/runs/{run_id}/status", headers={"Authorization": f"Bearer {token}"},
                         timeout=30),
            "run status",
            200,
        )["state"]
        if state in TERMINAL:
            return str(state)
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} still {state} after {timeout}s")
