"""`helixgate tool publish` and `helixgate run submit` with WDL, against a real `helixgate serve`
running tasks on the engine: the demo's WDL workflow is published (its import attached, the
registry records WDL 1.0), runs to COMPLETE from a local .wdl and from TRS with a DRS input, a
local input is uploaded when its declared type is File, and a hostile WDL document is refused
before anything is sent."""

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
from tests.integration.test_cli_data import as_json, one_line_error

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"banana\napple\ncherry\napple\nbanana\n"


@dataclass
class World:
    server: LiveServer
    dev: str
    analyst: str
    tool_id: str
    workflow: Path
    text_uri: str
    image_ref: str

    @property
    def host(self) -> str:
        return self.server.url.split("://", 1)[1]


@pytest.fixture()
def world(
    live_server_factory: Callable[..., LiveServer], pushed_busybox: PushedImage, test_session_id: str, tmp_path: Path
) -> World:
    server = live_server_factory(extra_env={"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)})
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    dev = server.user("dev", "tool-developer")
    tool = HelixGate.connect(server.url, dev).create_tool("helixgate-test", f"textkit-wdl-{test_session_id}")
    analyst = server.user("ann", "analyst")
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], "ann")
    obj = steward.upload(TEXT, name="fruit.txt", dataset_id=dataset["id"])
    wf = tmp_path / "wf"
    wf.mkdir()
    for name, content in workflow_files(tag_ref, "wdl").items():
        (wf / name).write_text(content)
    (wf / "unrelated.wdl").write_text("version 1.0\nworkflow never_attached {}\n")
    return World(server, dev, analyst, tool["id"], wf / "workflow.wdl", obj["self_uri"], tag_ref)


def test_publish_then_run_the_wdl_workflow_locally_and_from_trs(world: World, tmp_path: Path) -> None:
    server, ann = world.server, world.analyst
    # tool publish: WDL inferred from .wdl, the imported tasks.wdl attached without --file
    record = as_json(
        server.cli(
            "tool", "publish", world.tool_id, "1.0.0", "--image", world.image_ref,
            "--descriptor", str(world.workflow), "--json", token=world.dev,
        )
    )  # fmt: skip
    assert record["signature"]["signed"] is True and record["descriptor_type"] == ["WDL"]
    assert {f["path"] for f in record["files"]} == {"workflow.wdl", "tasks.wdl"}
    for f in record["files"]:
        local = hashlib.sha256((world.workflow.parent / f["path"]).read_bytes()).hexdigest()
        assert f["checksum"]["checksum"] == local
    verified = server.cli("tool", "verify", world.tool_id, "1.0.0", token=world.dev, check=True).stdout
    assert "file     workflow.wdl" in verified and "file     tasks.wdl" in verified, verified
    version = HelixGate.connect(server.url, ann).api.get_object(f"/ga4gh/trs/v2/tools/{world.tool_id}/versions/1.0.0")
    assert version["descriptor_type_version"] == {"WDL": ["1.0"]}

    # run submit from the local file: the import travels with it, the unrelated sibling does not
    assert set(workflow_attachments(world.workflow, "WDL")) == {"workflow.wdl", "tasks.wdl"}
    done = as_json(
        server.cli(
            "run", "submit", str(world.workflow), "--input", f"textkit.text={world.text_uri}",
            "--wait", "--timeout", "300", "--json", token=ann,
        )
    )  # fmt: skip
    assert done["state"] == "COMPLETE", (done, server.log()[-3000:])
    assert set(done["outputs"]) == {"textkit.sorted_lines", "textkit.line_count"}
    log = HelixGate.connect(server.url, ann).run_log(done["run_id"])
    assert (log["request"]["workflow_type"], log["request"]["workflow_type_version"]) == ("WDL", "1.0")
    got = as_json(
        server.cli("run", "outputs", done["run_id"], "--download", str(tmp_path / "o"), "--json", token=ann)
    )
    contents = sorted(Path(f["path"]).read_bytes() for f in got["files"])
    assert contents == [b"3\n", b"APPLE\nBANANA\nCHERRY\n"] and all(f["verified"] for f in got["files"])

    # the same workflow from the registry: --workflow-type WDL, the version from TRS's record
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"textkit.text": world.text_uri}))
    run2 = server.cli(
        "run", "submit", f"trs://{world.host}/{world.tool_id}/1.0.0", "--workflow-type", "WDL",
        "--inputs-json", str(inputs), "--wait", "--timeout", "300", token=ann,
    )  # fmt: skip
    assert run2.returncode == 0 and run2.stdout.strip().endswith("COMPLETE"), (run2.stdout, run2.stderr)


def test_local_file_inputs_are_uploaded_by_declared_type(world: World, tmp_path: Path) -> None:
    server = world.server
    local = tmp_path / "fruit.txt"
    local.write_bytes(TEXT)
    # an analyst without drs:write is told what to do, nothing is submitted
    line = one_line_error(
        server.cli("run", "submit", str(world.workflow), "--input", f"text={local}", token=world.analyst),
        "drs:write",
        "ask a data steward",
    )
    assert str(local) in line
    # analyst + steward: the File input (found by its WDL type, relative to inputs.json) is uploaded
    # first; the image is a signed TRS version's
    files = {p.name: p.read_text() for p in (world.workflow, world.workflow.parent / "tasks.wdl")}
    HelixGate.connect(server.url, world.dev).publish_version(
        world.tool_id, "1.0.0", files, [world.image_ref], primary="workflow.wdl", descriptor_type="WDL"
    )
    both = server.user("sam", "analyst", "data-steward")
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"textkit.text": "fruit.txt"}))
    r = server.cli(
        "run", "submit", str(world.workflow), "--inputs-json", str(inputs), "--wait", "--timeout", "300", "--json",
        token=both,
    )  # fmt: skip
    done = as_json(r)
    assert done["state"] == "COMPLETE" and "uploaded input fruit.txt" in r.stderr, (done, r.stderr)
    request = HelixGate.connect(server.url, both).run_log(done["run_id"])["request"]
    assert request["workflow_params"]["textkit.text"].startswith(f"drs://{world.host}/")


def test_hostile_or_invalid_wdl_is_refused_before_anything_is_sent(world: World, tmp_path: Path) -> None:
    server, ann = world.server, world.analyst
    hostile = world.workflow.parent / "hostile.wdl"
    hostile.write_text('version 1.0\nimport "/etc/hosts.wdl" as h\nworkflow w {}\n')
    one_line_error(server.cli("run", "submit", str(hostile), token=ann), "absolute path")
    one_line_error(
        server.cli("tool", "publish", world.tool_id, "2.0.0", "--image", world.image_ref, "--descriptor", str(hostile),
                   token=world.dev),
        "absolute path",
    )  # fmt: skip
    old = world.workflow.parent / "old.wdl"
    old.write_text("workflow w {}\n")
    one_line_error(
        server.cli("tool", "publish", world.tool_id, "2.0.1", "--image", world.image_ref, "--descriptor", str(old),
                   token=world.dev),
        "draft-2",
    )  # fmt: skip
    # the server's own check (the version a client claims is not the document's)
    r = server.cli(
        "run", "submit", str(world.workflow), "--workflow-type-version", "1.1", "--input",
        f"textkit.text={world.text_uri}", token=ann,
    )  # fmt: skip
    one_line_error(r, "400", "workflow_type_version is 1.1 but workflow.wdl declares version 1.0")
    r = server.cli("run", "submit", str(world.workflow), "--input", "textkit.text=/etc/passwd", token=ann)
    one_line_error(r, "/etc/passwd")
    assert HelixGate.connect(server.url, ann).api.get_json("/ga4gh/wes/v1/runs")["runs"] == []
    versions = HelixGate.connect(server.url, ann).get_tool(world.tool_id).get("versions") or []
    assert versions == []
