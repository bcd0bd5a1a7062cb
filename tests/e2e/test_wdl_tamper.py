"""The tamper cases of the CWL suite, for WDL: miniwdl's tasks pass the same gate, so an
unsigned image, a TRS record pointing at another image, an image re-tagged in the engine, an
altered DRS input and an altered intermediate are each refused before the affected task's
container is created (or, for the re-tag, never used), recorded as a security event, and
named in the run log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helixgate_app.demo_assets import workflow_files
from tests.e2e.conftest import World
from tests.e2e.test_run_control import _containers
from tests.e2e.test_tamper import _created_containers, _has_event, _run_text, _session, _version_row
from tests.e2e.test_wdl_run import TEXTS, fruit_wdl, submit_wdl, upload_texts
from tests.fixtures.docker_images import TEST_LABEL
from trs_registry.models import ImageRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fruit_run(world: World, image: str, objs: list[dict[str, Any]] | None = None) -> str:
    objs = objs or upload_texts(world)
    return submit_wdl(
        world, "fruit.wdl", {"fruit.texts": [world.drs_uri(o["id"]) for o in objs]}, {"fruit.wdl": fruit_wdl(image)}
    )


def _refused_before_any_container(world: World, run_id: str, since: float) -> str:
    state = world.analyst.wait(run_id, timeout=300)
    text = _run_text(world, run_id)
    assert state == "EXECUTOR_ERROR", (state, text)
    assert all(t.get("exit_code") is None for t in world.analyst.run_tasks(run_id)), text
    assert _created_containers(run_id, since) == [], text
    assert _has_event(world.server, "integrity.failed", run_id=run_id), text
    # the engine's closing line names the refused task instead of an empty exception
    assert "GateRefused: ;" not in text and not text.rstrip().endswith("GateRefused:"), text
    assert "the worker did not run task" in text or "refused:" in text, text
    return text


def test_unsigned_image_is_refused_before_any_container(world: World, docker_client: Any, test_session_id: str) -> None:
    from helixgate.images import build_busybox_image, push_image

    image_id = build_busybox_image(
        docker_client,
        "helixgate-test/unsigned",
        f"ws-{test_session_id}",
        labels={TEST_LABEL: test_session_id},
        extra_files={"/etc/unsigned": b"1"},
    )
    digest = push_image(docker_client, image_id, "127.0.0.1:5000", "helixgate-test/unsigned", f"ws-{test_session_id}")
    since = time.time()
    run_id = _fruit_run(world, f"127.0.0.1:5000/helixgate-test/unsigned@{digest}")
    text = _refused_before_any_container(world, run_id, since)
    assert "is not the signed image of any TRS tool version: refusing an unsigned image" in text, text


def test_trs_record_pointing_at_another_local_image_is_refused(
    world: World, docker_client: Any, test_session_id: str
) -> None:
    from helixgate.images import build_busybox_image

    other = build_busybox_image(
        docker_client,
        "helixgate-test/never-published",
        f"wnp-{test_session_id}",
        labels={TEST_LABEL: test_session_id},
        extra_files={"/etc/never-published": b"1"},
    )
    with _session(world.server) as s:
        row = _version_row(s, world.tool_id, world.version_id)
        s.execute(sa.update(ImageRow).where(ImageRow.version_pk == row.pk).values(config_digest=other))
        s.commit()
    since = time.time()
    run_id = _fruit_run(world, world.image.pinned_ref)
    text = _refused_before_any_container(world, run_id, since)
    assert "image configuration digest recorded in TRS differs from the signed statement" in text, text
    assert f"expected {world.image.image_id}, got {other}" in text, text
    assert "equals the signed" not in text


def test_engine_tag_pointing_at_another_local_image_is_never_used(
    world: World, docker_client: Any, test_session_id: str
) -> None:
    """The published name:tag is re-tagged in the local engine onto an image nobody signed: every
    task still runs the image whose id the statement signs (created by id, never by tag)."""
    from helixgate.images import build_busybox_image, push_image

    tag = f"wlt-{test_session_id}"
    repo = "helixgate-test/busybox"
    push_image(docker_client, world.image.image_id, "127.0.0.1:5000", repo, tag)
    ref = f"127.0.0.1:5000/{repo}:{tag}"
    world.dev.publish_version(world.tool_id, "4.1.0", workflow_files(ref), [ref], primary="workflow.cwl")
    evil = build_busybox_image(
        docker_client,
        repo,
        f"wle-{test_session_id}",
        labels={TEST_LABEL: test_session_id},
        extra_files={"/etc/evil": b"1"},
    )
    docker_client.api.tag(evil, f"127.0.0.1:5000/{repo}", tag)  # the engine's tag now names evil
    since = time.time()
    run_id = _fruit_run(world, ref)
    assert world.analyst.wait(run_id, timeout=300) == "COMPLETE", _run_text(world, run_id)
    text = _run_text(world, run_id)
    assert f"local image id {world.image.image_id} equals the signed" in text
    assert evil not in text
    created = _created_containers(run_id, since)
    assert len(created) == 5 and all(c.get("image") == world.image.image_id for c in created), created


def test_altered_drs_input_is_refused_before_any_container(world: World) -> None:
    objs = upload_texts(world)
    blobs = sorted(Path(world.server.data_dir).rglob("*.blob"), key=lambda p: p.stat().st_mtime)
    assert len(blobs) == len(TEXTS), blobs  # the only objects on this fresh server
    raw = bytearray(blobs[0].read_bytes())
    raw[-20] ^= 0x01
    blobs[0].write_bytes(bytes(raw))
    since = time.time()
    run_id = _fruit_run(world, world.image.pinned_ref, objs)
    state = world.analyst.wait(run_id, timeout=300)
    text = _run_text(world, run_id)
    assert state == "EXECUTOR_ERROR", (state, text)
    assert _created_containers(run_id, since) == [], text
    assert "refused:" in text and "drs://" in text, text
    assert _has_event(world.server, "integrity.failed", run_id=run_id), text


SLOW_WDL = """version 1.0

task upper {
  input { File src }
  command <<<
    tr a-z A-Z < ~{src} > upper.txt
  >>>
  output { File out = "upper.txt" }
  runtime { docker: "IMAGE" }
}

task slow {
  input { File src  Int seconds }
  command <<<
    sleep ~{seconds}; echo done
  >>>
  output { File out = stdout() }
  runtime { docker: "IMAGE" }
}

task merge {
  input { File a  File after }
  command <<<
    cat ~{a} ~{after}
  >>>
  output { File out = stdout() }
  runtime { docker: "IMAGE" }
}

workflow slowfruit {
  input { File text  Int seconds }
  call upper { input: src = text }
  call slow { input: src = text, seconds = seconds }
  call merge { input: a = upper.out, after = slow.out }
  output { File out = merge.out }
}
"""


def slow_run(world: World, seconds: int) -> str:
    obj = world.steward.upload(TEXTS[0], name="t.txt", dataset_id=world.dataset_id)
    return submit_wdl(
        world,
        "slow.wdl",
        {"slowfruit.text": world.drs_uri(obj["id"]), "slowfruit.seconds": seconds},
        {"slow.wdl": SLOW_WDL.replace("IMAGE", world.image.pinned_ref).encode()},
    )


def _wait_task_done(world: World, run_id: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t["name"] == name and t.get("exit_code") is not None for t in world.analyst.run_tasks(run_id)):
            return
        time.sleep(0.2)
    raise AssertionError(f"task {name} of {run_id} did not finish")


def test_altered_intermediate_is_refused_before_the_next_container(world: World) -> None:
    run_id = slow_run(world, 5)
    _wait_task_done(world, run_id, "call-upper")
    work = Path(world.server.data_dir) / "wes" / "work" / run_id
    outs = [p for p in work.rglob("upper.txt") if not p.is_symlink() and p.is_file()]
    assert len(outs) == 1, outs
    outs[0].write_bytes(b"FORGED\n")  # while slow still sleeps
    assert world.analyst.wait(run_id, timeout=120) == "EXECUTOR_ERROR"
    text = _run_text(world, run_id)
    assert "sha256 mismatch for input upper.txt" in text and "-call-upper)" in text, text
    tasks = {t["name"]: t for t in world.analyst.run_tasks(run_id)}
    assert tasks["call-merge"].get("exit_code") is None, tasks  # merge never ran
    assert _has_event(world.server, "integrity.failed", run_id=run_id), text
    assert _containers(run_id) == []
