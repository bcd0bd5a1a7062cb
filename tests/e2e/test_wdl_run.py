"""A multi-step WDL workflow with a scatter over DRS inputs runs end to end through WES
``POST /runs`` on the real Docker engine: miniwdl evaluates it in the engine sandbox, every
task passes the same gate as a CWL task (evidence in the task logs), and the outputs land in
DRS with checksums and provenance."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests

from tests.e2e.conftest import World
from tests.fixtures.docker_images import labelled_containers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = [b"banana\napple\n", b"cherry\ndate\n", b"elder\nfig\n"]

FRUIT_WDL = """version VERSION

task upper {
  input { File src }
  command <<<
    tr a-z A-Z < ~{src} > upper.txt
  >>>
  output { File out = "upper.txt" }
  runtime { docker: "IMAGE" }
}

task merge {
  input { Array[File] parts }
  command <<<
    cat $(cat ~{write_lines(parts)}) | sort > merged.txt
  >>>
  output { File out = "merged.txt" }
  runtime { docker: "IMAGE" }
}

task count {
  input { File src }
  command <<<
    grep -c . ~{src}
  >>>
  output { File out = stdout() }
  runtime { docker: "IMAGE" }
}

workflow fruit {
  input { Array[File] texts }
  scatter (t in texts) {
    call upper { input: src = t }
  }
  call merge { input: parts = upper.out }
  call count { input: src = merge.out }
  output {
    File merged = merge.out
    File lines = count.out
  }
}
"""


def fruit_wdl(image: str, version: str = "1.0") -> bytes:
    return FRUIT_WDL.replace("IMAGE", image).replace("VERSION", version).encode()


def submit_wdl(
    world: World,
    workflow_url: str,
    params: dict[str, Any],
    attachments: dict[str, bytes] | None = None,
    version: str = "1.0",
) -> str:
    """POST /runs with workflow_type WDL (multipart, the WES contract)."""
    form = {
        "workflow_url": workflow_url,
        "workflow_type": "WDL",
        "workflow_type_version": version,
        "workflow_params": json.dumps(params),
    }
    parts: list[tuple[str, tuple[str | None, Any]]] = [(k, (None, v)) for k, v in form.items()]
    parts += [("workflow_attachment", (name, content)) for name, content in (attachments or {}).items()]
    resp = world.analyst.api.request("POST", "/ga4gh/wes/v1/runs", files=parts)
    return str(resp.json()["run_id"])


def upload_texts(world: World) -> list[dict[str, Any]]:
    return [world.steward.upload(t, name=f"part{i}.txt", dataset_id=world.dataset_id) for i, t in enumerate(TEXTS)]


def _object_id(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_scatter_workflow_on_drs_inputs_runs_verified(world: World, version: str) -> None:
    objs = upload_texts(world)
    run_id = submit_wdl(
        world,
        "fruit.wdl",
        {"fruit.texts": [world.drs_uri(o["id"]) for o in objs]},
        {"fruit.wdl": fruit_wdl(world.image.pinned_ref, version)},
        version,
    )
    state = world.analyst.wait(run_id, timeout=300)
    log = world.analyst.run_log(run_id)
    assert state == "COMPLETE", "\n".join(log["run_log"]["system_logs"]) + str(world.analyst.run_tasks(run_id))
    tasks = world.analyst.run_tasks(run_id)
    names = sorted(t["name"] for t in tasks)
    assert len(tasks) == 5 and names[:2] == ["call-count", "call-merge"], names
    assert sum(n.startswith("call-upper") for n in names) == 3, names
    assert all(t["exit_code"] == 0 for t in tasks)
    # per-task evidence: the signed image, and every input's checksum against its producer
    uris = {world.drs_uri(o["id"]) for o in objs}
    for t in tasks:
        text = "\n".join(t["system_logs"])
        assert f"local image id {world.image.image_id} equals the signed configuration digest" in text, text
    upper = [t for t in tasks if t["name"].startswith("call-upper")]
    for t, (obj, data) in zip(sorted(upper, key=lambda t: t["name"]), zip(objs, TEXTS, strict=True), strict=True):
        text = "\n".join(t["system_logs"])
        assert f"sha256 {hashlib.sha256(data).hexdigest()} matches {world.drs_uri(obj['id'])}" in text, text
    merge = next(t for t in tasks if t["name"] == "call-merge")
    merge_text = "\n".join(merge["system_logs"])
    assert merge_text.count("matches task ") == 3 and not any(u in merge_text for u in uris), merge_text
    # write_lines() is evaluated by the engine and written by the worker: data, with its checksum
    assert "generated file _miniwdl_inputs/" in merge_text and "written by the worker (sha256 " in merge_text
    # outputs are DRS objects whose checksums match their bytes, with provenance
    outputs = log["outputs"]
    merged_uri, lines_uri = outputs["fruit.merged"]["location"], outputs["fruit.lines"]["location"]
    merged = b"".join(world.analyst.download(_object_id(merged_uri)))
    assert merged == b"APPLE\nBANANA\nCHERRY\nDATE\nELDER\nFIG\n"
    assert b"".join(world.analyst.download(_object_id(lines_uri))).strip() == b"6"
    assert outputs["fruit.merged"]["checksum"] == "sha256$" + hashlib.sha256(merged).hexdigest()
    meta = world.analyst.get_object(_object_id(merged_uri))
    assert {"type": "sha-256", "checksum": hashlib.sha256(merged).hexdigest()} in meta["checksums"]
    prov = meta["provenance"]
    assert prov["run_id"] == run_id and prov["image_digest"] == world.image.image_id
    assert prov["task_id"] == merge["id"]
    r = requests.get(upper[0]["stderr"], headers=world.analyst.api._headers(None), timeout=30)
    assert r.status_code == 200
    assert labelled_containers(f"helixgate.run_id={run_id}") == []


def test_a_signed_trs_wdl_version_runs_under_its_own_signature(world: World) -> None:
    """The workflow comes from a TRS WDL version: its descriptor is re-hashed against the
    signed statement before miniwdl reads it, and every task runs under that version's own
    signature (no other version's pin counts)."""
    image = world.image.pinned_ref
    world.dev.publish_version(
        world.tool_id,
        "5.0.0-wdl",
        {"fruit.wdl": fruit_wdl(image).decode()},
        [image],
        primary="fruit.wdl",
        descriptor_type="WDL",
    )
    objs = upload_texts(world)
    run_id = submit_wdl(
        world,
        f"trs://{world.drs_host}/{world.tool_id}/5.0.0-wdl",
        {"fruit.texts": [world.drs_uri(o["id"]) for o in objs]},
    )
    state = world.analyst.wait(run_id, timeout=300)
    log = world.analyst.run_log(run_id)
    assert state == "COMPLETE", "\n".join(log["run_log"]["system_logs"])
    tasks = world.analyst.run_tasks(run_id)
    assert len(tasks) == 5
    assert all(f"over tool {world.tool_id}:5.0.0-wdl" in "\n".join(t["system_logs"]) for t in tasks), tasks
    merged = b"".join(world.analyst.download(_object_id(log["outputs"]["fruit.merged"]["location"])))
    assert merged == b"APPLE\nBANANA\nCHERRY\nDATE\nELDER\nFIG\n"


def test_a_task_without_a_signed_container_never_runs(world: World) -> None:
    """miniwdl's default image is switched off: a task naming no runtime.docker/container is
    refused by the worker (no container), the reason in the run's logs."""
    wdl = """version 1.0
task hello {
  command <<<
    echo hello
  >>>
  output { File out = stdout() }
}
workflow bare {
  call hello
  output { File out = hello.out }
}
"""
    run_id = submit_wdl(world, "bare.wdl", {}, {"bare.wdl": wdl.encode()})
    assert world.analyst.wait(run_id, timeout=120) == "EXECUTOR_ERROR"
    tasks = world.analyst.run_tasks(run_id)
    text = "\n".join(world.analyst.run_log(run_id)["run_log"]["system_logs"] + [str(t["system_logs"]) for t in tasks])
    assert "every task must run in a signed container: the task names no container image" in text, text
    assert all(t.get("exit_code") is None for t in tasks)
    assert labelled_containers(f"helixgate.run_id={run_id}") == []
