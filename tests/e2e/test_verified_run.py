"""A three-step CWL workflow whose inputs are DRS objects runs end to end on the real
Docker engine; its outputs land in DRS with checksums and provenance; tampering is refused
before the first task."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from helixgate_app.demo_assets import workflow_files
from tests.e2e.conftest import World
from tests.fixtures.docker_images import labelled_containers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"banana\napple\ncherry\napple\nbanana\n"


def _upload(world: World, data: bytes = TEXT) -> dict[str, Any]:
    return world.steward.upload(data, name="fruit.txt", dataset_id=world.dataset_id)


def _params(world: World, object_id: str) -> dict[str, Any]:
    return {"text": {"class": "File", "location": world.drs_uri(object_id)}}


def _containers_of(run_id: str) -> list[Any]:
    return labelled_containers(f"helixgate.run_id={run_id}")


def _object_id(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def test_three_step_workflow_runs_verified_and_outputs_verify_in_drs(world: World) -> None:
    obj = _upload(world)
    run_id = world.analyst.submit_run(
        f"trs://{world.drs_host}/{world.tool_id}/{world.version_id}", _params(world, obj["id"])
    )
    state = world.analyst.wait(run_id, timeout=300)
    log = world.analyst.run_log(run_id)
    assert state == "COMPLETE", (log, world.server.log()[-3000:])
    tasks = world.analyst.run_tasks(run_id)
    assert [t["name"] for t in tasks] == ["upper", "sort", "count"]
    assert all(t["exit_code"] == 0 for t in tasks)
    # the evidence of each task: the signed image it ran and every input's expected vs actual sha256
    evidence = world.analyst.run_evidence(run_id)
    assert [e["task_id"] for e in evidence] == [t["id"] for t in tasks]
    for e in evidence:
        image = e["image"]
        assert image["verified"] is True and image["image_id"] == world.image.image_id, e
        assert (image["tool_id"], image["version_id"]) == (world.tool_id, world.version_id)
        assert image["signer"] and image["pinned_ref"].endswith(world.image.digest), e
        assert len(e["inputs"]) == 1 and "refusal" not in e, e
        assert e["inputs"][0]["expected"] == e["inputs"][0]["actual"], e
    assert evidence[0]["inputs"][0]["actual"] == hashlib.sha256(TEXT).hexdigest()
    assert evidence[0]["inputs"][0]["source"] == world.drs_uri(obj["id"])
    assert evidence[1]["inputs"][0]["actual"] == evidence[0]["outputs"][0]["sha256"]  # sort reads upper's output
    # outputs are DRS objects whose checksums match their bytes
    outputs = log["outputs"]
    sorted_uri, count_uri = outputs["sorted_lines"]["location"], outputs["line_count"]["location"]
    assert sorted_uri.startswith("drs://") and count_uri.startswith("drs://")
    sorted_bytes = b"".join(world.analyst.download(_object_id(sorted_uri)))
    assert sorted_bytes == b"APPLE\nBANANA\nCHERRY\n"
    assert b"".join(world.analyst.download(_object_id(count_uri))).strip() == b"3"
    meta = world.analyst.get_object(_object_id(sorted_uri))
    assert {"type": "sha-256", "checksum": hashlib.sha256(sorted_bytes).hexdigest()} in meta["checksums"]
    assert outputs["sorted_lines"]["checksum"] == "sha256$" + hashlib.sha256(sorted_bytes).hexdigest()
    prov = meta["provenance"]
    assert prov["run_id"] == run_id and prov["image_digest"] == world.image.image_id
    assert prov["task_id"] == tasks[1]["id"]
    # task logs are fetchable URLs; no container survives the run
    r = requests.get(tasks[0]["stderr"], headers=world.analyst.api._headers(None), timeout=30)
    assert r.status_code == 200
    assert _containers_of(run_id) == []


def test_unsigned_image_is_refused_before_any_task(world: World, docker_client: Any, test_session_id: str) -> None:
    from helixgate.images import build_busybox_image, push_image

    # same workflow, but an image nobody published in TRS
    image_id = build_busybox_image(
        docker_client,
        "helixgate-test/unsigned",
        f"s-{test_session_id}",
        labels={"helixgate.test": test_session_id},
        extra_files={"/etc/unsigned": b"1"},
    )
    digest = push_image(docker_client, image_id, "127.0.0.1:5000", "helixgate-test/unsigned", f"s-{test_session_id}")
    files = workflow_files(f"127.0.0.1:5000/helixgate-test/unsigned@{digest}")
    obj = _upload(world)
    run_id = world.analyst.submit_run(
        "workflow.cwl", _params(world, obj["id"]), attachments={k: v.encode() for k, v in files.items()}
    )
    assert world.analyst.wait(run_id, timeout=300) == "EXECUTOR_ERROR"
    log = world.analyst.run_log(run_id)
    text = "\n".join(log["run_log"]["system_logs"])
    assert "unsigned image" in text, text
    tasks = world.analyst.run_tasks(run_id)
    assert all(t.get("exit_code") is None for t in tasks)  # nothing ran
    assert _containers_of(run_id) == []


def test_retagged_image_is_refused(world: World, docker_client: Any, test_session_id: str) -> None:
    """The published tag is re-pointed to different content: the run still uses the pinned
    digest, and the re-pointed content never runs. Uses its own tag so other tests keep theirs."""
    from helixgate.images import build_busybox_image, push_image

    tag = f"rt-{test_session_id}"
    repo = "helixgate-test/busybox"
    push_image(docker_client, world.image.image_id, "127.0.0.1:5000", repo, tag)
    ref = f"127.0.0.1:5000/{repo}:{tag}"
    world.dev.publish_version(world.tool_id, "2.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    evil = build_busybox_image(
        docker_client,
        repo,
        f"evil-{test_session_id}",
        labels={"helixgate.test": test_session_id},
        extra_files={"/etc/evil": b"1"},
    )
    push_image(docker_client, evil, "127.0.0.1:5000", repo, tag)  # re-point the published tag
    obj = _upload(world)
    run_id = world.analyst.submit_run(f"trs://{world.drs_host}/{world.tool_id}/2.0.0", _params(world, obj["id"]))
    state = world.analyst.wait(run_id, timeout=300)
    tasks = world.analyst.run_tasks(run_id)
    assert state == "COMPLETE"
    assert all(t["exit_code"] == 0 for t in tasks)
    # every task ran the signed image, never the re-pointed content
    assert all(world.image.image_id in "\n".join(t["system_logs"]) for t in tasks)
    assert not any(evil in "\n".join(t["system_logs"]) for t in tasks)
    drift = world.dev.api.get_json(f"/ga4gh/trs/v2/x-helixgate/tools/{world.tool_id}/versions/2.0.0/image-status")
    assert drift["current"] is False and drift["images"][0]["status"] == "drifted"


def test_corrupted_drs_object_is_refused_before_first_task(world: World) -> None:
    obj = _upload(world)
    blobs = list(Path(world.server.data_dir).rglob("*.blob"))
    assert len(blobs) == 1, blobs  # the only object stored on this fresh server
    blob = blobs[0]
    raw = bytearray(blob.read_bytes())
    raw[-20] ^= 0x01
    blob.write_bytes(bytes(raw))
    run_id = world.analyst.submit_run(
        f"trs://{world.drs_host}/{world.tool_id}/{world.version_id}", _params(world, obj["id"])
    )
    state = world.analyst.wait(run_id, timeout=300)
    assert state in ("EXECUTOR_ERROR", "SYSTEM_ERROR")
    assert world.analyst.run_tasks(run_id) == []  # refused before any task
    log = world.analyst.run_log(run_id)
    assert any(
        "integrity" in m.lower() or "sha256" in m.lower() or "failed" in m.lower()
        for m in log["run_log"]["system_logs"]
    )


def test_user_without_read_access_is_refused_at_submission(world: World) -> None:
    obj = _upload(world)
    outsider = world.server.user("olga", "analyst")
    from helixgate.client import ClientError
    from helixgate.sdk import HelixGate

    with pytest.raises(ClientError) as info:
        HelixGate.connect(world.server.url, outsider).submit_run(
            f"trs://{world.drs_host}/{world.tool_id}/{world.version_id}", _params(world, obj["id"])
        )
    assert info.value.status == 403
    assert obj["id"] in info.value.message


@pytest.mark.parametrize("version", ["v1.0", "v1.1", "v1.2"])
def test_each_cwl_version_runs_verified(world: World, version: str) -> None:
    tool = f"""cwlVersion: {version}
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{world.image.pinned_ref}"}}
baseCommand: [sort]
inputs:
  src: {{type: File, inputBinding: {{position: 1}}}}
outputs:
  out: {{type: stdout}}
stdout: sorted.txt
"""
    obj = _upload(world)
    run_id = world.analyst.submit_run(
        "sort.cwl",
        {"src": {"class": "File", "location": world.drs_uri(obj["id"])}},
        attachments={"sort.cwl": tool.encode()},
        workflow_type_version=version,
    )
    assert world.analyst.wait(run_id, timeout=120) == "COMPLETE", world.analyst.run_log(run_id)
    out = world.analyst.run_log(run_id)["outputs"]["out"]
    assert b"".join(world.analyst.download(_object_id(out["location"]))) == b"".join(sorted(TEXT.splitlines(True)))
