"""Hostile WDL at run time: what the submission check refuses (400) must also be refused by
the worker when it reaches it anyway, and what no submission check can see must be refused
while the workflow runs. Each refusal happens before any container, is a security event and is
named in the run log; the host file's content never shows up anywhere.

* imports of host paths (absolute, ``..``) and File inputs naming host files (a path, a
  ``file://`` URL): the run is accepted intact, then its stored rows are edited before a worker
  starts (an attacker with write access to WES's tables);
* a File made inside the workflow from a host path (a non-input declaration): accepted at
  submission, refused by the engine's container backend before the task is asked for.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.orm.attributes import flag_modified

from tests.e2e.test_run_control import _world
from tests.e2e.test_tamper import _created_containers, _has_event, _run_text, _session
from tests.e2e.test_wdl_run import fruit_wdl, submit_wdl, upload_texts
from tests.fixtures.docker_images import PushedImage, session_scope
from tests.fixtures.live import stop_server
from wes_server.models import AttachmentRow, RunRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = b"TOP-SECRET-host-file-content\n"


def _assert_refused(world: Any, run_id: str, since: float, reason: str) -> None:
    state = world.analyst.wait(run_id, timeout=300)
    text = _run_text(world, run_id)
    assert state == "EXECUTOR_ERROR", (state, text)
    assert reason in text, text
    assert "TOP-SECRET" not in text and "TOP-SECRET" not in world.server.log()
    assert all(t.get("exit_code") is None for t in world.analyst.run_tasks(run_id)), text
    assert _created_containers(run_id, since) == [], text
    assert _has_event(world.server, "integrity.failed", run_id=run_id), text


@pytest.mark.parametrize("tamper", ["import-absolute", "import-traversal", "input-host-path", "input-file-url"])
def test_hostile_wdl_reaching_the_worker_is_refused(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str, tamper: str
) -> None:
    env = {"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)}
    api_only = live_server_factory(extra_env=env, workers=0)
    world = _world(api_only, pushed_busybox, test_session_id)
    secret = api_only.data_dir / "secret.wdl"
    secret.write_bytes(SECRET)
    objs = upload_texts(world)
    since = time.time()
    run_id = submit_wdl(
        world,
        "fruit.wdl",
        {"fruit.texts": [world.drs_uri(o["id"]) for o in objs]},
        {"fruit.wdl": fruit_wdl(world.image.pinned_ref)},
    )
    assert world.analyst.run_status(run_id) == "QUEUED"
    with _session(api_only) as s:
        if tamper.startswith("import"):
            target = str(secret) if tamper == "import-absolute" else "../../../../../secret.wdl"
            evil = fruit_wdl(world.image.pinned_ref).replace(
                b"version 1.0\n", f'version 1.0\nimport "{target}"\n'.encode()
            )
            att = s.get(AttachmentRow, (run_id, "fruit.wdl"))
            assert att is not None
            att.content, att.sha256 = evil, hashlib.sha256(evil).hexdigest()
        else:
            row = s.scalars(sa.select(RunRow).where(RunRow.id == run_id)).one()
            value = str(secret) if tamper == "input-host-path" else secret.as_uri()
            row.request = {**row.request, "workflow_params": {"fruit.texts": [value]}}
            flag_modified(row, "request")
        s.commit()
    stop_server(api_only)
    world.server = live_server_factory(extra_env=env, data_dir=api_only.data_dir, port=api_only.port)
    reason = {
        "import-absolute": "is an absolute path: imports must be relative to the importing file",
        "import-traversal": "leaves its directory",
        "input-host-path": "must be a drs:// object or one of the run's attached files (host paths are never read)",
        "input-file-url": "must be a drs:// object or one of the run's attached files (host paths are never read)",
    }[tamper]
    _assert_refused(world, run_id, since, reason)
    assert world.analyst.run_tasks(run_id) == []


MADE_AT_RUN_TIME = """version 1.0

task show {
  input { File f }
  command <<<
    cat ~{f}
  >>>
  output { File out = stdout() }
  runtime { docker: "IMAGE" }
}

workflow leak {
  input { String tag = "x" }
  File secret = "SECRET"
  call show { input: f = secret }
  output { File out = show.out }
}
"""


def test_file_made_from_a_host_path_inside_the_workflow_is_refused(world: Any) -> None:
    secret = world.server.data_dir / "secret.txt"
    secret.write_bytes(SECRET)
    wdl = MADE_AT_RUN_TIME.replace("IMAGE", world.image.pinned_ref).replace("SECRET", str(secret))
    since = time.time()
    run_id = submit_wdl(world, "leak.wdl", {}, {"leak.wdl": wdl.encode()})
    # miniwdl's own guard ([file_io] allow_any_input = false) stops it at the workflow level;
    # the container backend refuses any File outside the run a task would be handed
    _assert_refused(world, run_id, since, "miniwdl refused a File the run does not own")
