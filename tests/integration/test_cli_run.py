"""`helixgate run ...` (workflow users) against a real `helixgate serve` running tasks on the engine:
the demo workflow with a DRS input runs to COMPLETE from a local .cwl (siblings attached) and from
TRS; outputs download with verified checksums; local inputs need drs:write; cancel; one-line errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helixgate.sdk import HelixGate
from helixgate_app.cli_groups import workflow_attachments
from helixgate_app.demo_assets import workflow_files
from tests.fixtures.docker_images import PushedImage, session_scope
from tests.fixtures.live import LiveServer
from tests.integration.test_cli_data import as_json, closed_url, one_line_error

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"banana\napple\ncherry\napple\nbanana\n"
SLEEP_CWL = """cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
baseCommand: [sleep, "60"]
inputs:
  text: File
outputs: []
"""
SHOUT_CWL = """cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
baseCommand: [sh, -c, 'echo shouting >&2; tr a-z A-Z < "$0"']
inputs:
  text: {type: File, inputBinding: {position: 1}}
outputs:
  out: {type: stdout}
stdout: shout.txt
"""


@dataclass
class World:
    server: LiveServer
    analyst: str
    steward: str
    tool_id: str
    workflow: Path
    text_uri: str
    image_ref: str


@pytest.fixture()
def world(
    live_server_factory: Callable[..., LiveServer], pushed_busybox: PushedImage, test_session_id: str, tmp_path: Path
) -> World:
    server = live_server_factory(extra_env={"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)})
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
    tool = dev.create_tool("helixgate-test", f"textkit-{test_session_id}")
    dev.publish_version(tool["id"], "1.0.0", workflow_files(tag_ref), [tag_ref], primary="workflow.cwl")
    analyst = server.user("ann", "analyst")
    steward_token = server.user("steward", "data-steward")
    steward = HelixGate.connect(server.url, steward_token)
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], "ann")
    obj = steward.upload(TEXT, name="fruit.txt", dataset_id=dataset["id"])
    wf = tmp_path / "wf"
    wf.mkdir()
    for name, content in workflow_files(tag_ref).items():
        (wf / name).write_text(content)
    (wf / "unrelated.cwl").write_text("not referenced: never attached\n")
    return World(server, analyst, steward_token, tool["id"], wf / "workflow.cwl", obj["self_uri"], tag_ref)


def test_submit_wait_outputs_of_the_demo_workflow(world: World, tmp_path: Path) -> None:
    server, ann = world.server, world.analyst
    # the workflow and the tools it references travel with it; unrelated siblings do not
    assert set(workflow_attachments(world.workflow)) == {"workflow.cwl", "upper.cwl", "sort.cwl", "count.cwl"}
    done = as_json(
        server.cli(
            "run", "submit", str(world.workflow), "--input", f"text={world.text_uri}", "--tag", "purpose=cli-test",
            "--wait", "--timeout", "300", "--json", token=ann,
        )
    )  # fmt: skip
    run_id = done["run_id"]
    assert done["state"] == "COMPLETE", (done, server.log()[-3000:])
    assert set(done["outputs"]) == {"sorted_lines", "line_count"} or set(done["outputs"]) == {"sorted", "count"}

    assert server.cli("run", "status", run_id, token=ann, check=True).stdout.split() == [run_id, "COMPLETE"]
    assert as_json(server.cli("run", "status", run_id, "--json", token=ann)) == {"run_id": run_id, "state": "COMPLETE"}
    assert server.cli("run", "wait", run_id, token=ann, check=True).stdout.strip() == f"run {run_id}: COMPLETE"

    tasks = as_json(server.cli("run", "tasks", run_id, "--json", token=ann))["tasks"]
    assert [t["name"] for t in tasks] == ["upper", "sort", "count"]
    table = server.cli("run", "tasks", run_id, token=ann, check=True).stdout
    assert all(t["id"] in table for t in tasks)
    server.cli("run", "logs", run_id, "--task", tasks[0]["id"], token=ann, check=True)
    logs = as_json(server.cli("run", "logs", run_id, "--stderr", "--json", token=ann))
    assert logs["stream"] == "stderr" and isinstance(logs["text"], str)

    listed = server.cli("run", "outputs", run_id, token=ann, check=True).stdout
    assert listed.count("drs://") == 2
    dest = tmp_path / "results"
    got = as_json(server.cli("run", "outputs", run_id, "--download", str(dest), "--json", token=ann))
    files = {Path(f["path"]).read_bytes(): f for f in got["files"]}
    assert b"APPLE\nBANANA\nCHERRY\n" in files and all(f["verified"] for f in got["files"])
    for content, f in files.items():
        assert f["sha256"] == hashlib.sha256(content).hexdigest() and Path(f["path"]).is_relative_to(dest)
    human = server.cli("run", "outputs", run_id, "--download", str(tmp_path / "again"), token=ann, check=True).stdout
    assert human.count("verified") == 2

    # the same workflow from the registry
    run2 = server.cli(
        "run", "submit", f"trs://{server.url.split('://')[1]}/{world.tool_id}/1.0.0", "--input",
        f"text={world.text_uri}", token=ann, check=True,
    ).stdout.strip()  # fmt: skip
    assert (
        server.cli("run", "wait", run2, "--timeout", "300", token=ann, check=True).stdout.strip().endswith("COMPLETE")
    )


def test_local_inputs_need_drs_write(world: World, tmp_path: Path) -> None:
    server = world.server
    local = tmp_path / "fruit.txt"
    local.write_bytes(TEXT)
    line = one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={local}", token=world.analyst),
        "ask a data steward",
        "drs:write",
    )
    assert "input text" in line
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"text": {"class": "File", "path": "fruit.txt"}}))  # relative to inputs.json
    one_line_error(
        server.cli("run", "submit", str(world.workflow), "--inputs-json", str(inputs), token=world.analyst),
        f"{local} is a local file",
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"text": ')
    line = one_line_error(
        server.cli("run", "submit", str(world.workflow), "--inputs-json", str(broken), token=world.analyst),
        f"{broken} is not valid JSON",
    )
    assert "line 1" in line
    # a user who is both analyst and steward: the local file is uploaded first, then the run uses it
    both = server.user("sam", "analyst", "data-steward")
    shout = world.workflow.parent / "shout.cwl"
    shout.write_text(SHOUT_CWL.replace("@IMAGE@", world.image_ref))
    r = server.cli(
        "run", "submit", str(shout), "--input", f"text={local}", "--wait", "--timeout", "300", "--json", token=both
    )  # fmt: skip
    done = as_json(r)
    assert done["state"] == "COMPLETE" and "uploaded input text" in r.stderr
    task = as_json(server.cli("run", "tasks", done["run_id"], "--json", token=both))["tasks"][0]
    err = server.cli("run", "logs", done["run_id"], "--task", task["id"], "--stderr", token=both, check=True).stdout
    assert "shouting" in err
    got = as_json(server.cli("run", "outputs", done["run_id"], "--download", str(tmp_path / "o"), "--json", token=both))
    assert [Path(f["path"]).read_bytes() for f in got["files"]] == [TEXT.upper()]


def test_cancel_and_wait_on_a_run_that_does_not_complete(world: World) -> None:
    server, ann = world.server, world.analyst
    sleeper = world.workflow.parent / "sleep.cwl"
    sleeper.write_text(SLEEP_CWL.replace("@IMAGE@", world.image_ref))
    run_id = server.cli("run", "submit", str(sleeper), "--input", f"text={world.text_uri}", token=ann, check=True)
    run_id_s = run_id.stdout.strip()
    cancelled = as_json(server.cli("run", "cancel", run_id_s, "--json", token=ann))
    assert cancelled["run_id"] == run_id_s and cancelled["state"] in ("CANCELING", "CANCELED")
    r = server.cli("run", "wait", run_id_s, "--timeout", "120", token=ann)
    assert r.stdout.strip() == f"run {run_id_s}: CANCELED"
    one_line_error(r, f"run {run_id_s} finished CANCELED")


def test_run_errors_are_one_line(world: World, tmp_path: Path) -> None:
    server, ann = world.server, world.analyst
    unknown = "0" * 32
    one_line_error(server.cli("run", "status", unknown, token="not-a-token"), "401")
    one_line_error(server.cli("run", "submit", str(world.workflow), "--input", f"text={world.text_uri}",
                              token="not-a-token"), "401")  # fmt: skip
    for cmd in ("status", "wait", "tasks", "logs", "outputs", "cancel"):
        one_line_error(server.cli("run", cmd, unknown, token=ann), "404")
    one_line_error(server.cli("run", "submit", str(tmp_path / "nope.cwl"), token=ann), "no such file")
    one_line_error(server.cli("run", "submit", str(world.workflow), "--input", "text", token=ann), "NAME=VALUE")
    one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={tmp_path}/missing.txt", token=ann),
        "no such file",
    )
    # a steward may not submit runs; another analyst may not read the input
    one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={world.text_uri}", token=world.steward),
        "403",
    )
    olga = server.user("olga", "analyst")
    one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={world.text_uri}", token=olga), "403"
    )
    down = closed_url()
    one_line_error(server.cli("run", "status", unknown, "--url", down, token=ann), f"cannot reach {down}")
    one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={world.text_uri}", "--url", down,
                   token=ann), "cannot reach",
    )  # fmt: skip
