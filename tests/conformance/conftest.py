"""One seeded ``helixgate serve`` shared by the conformance tests (started once per session).

The server runs with ``clock_skew=0`` so an expired token is refused one second after expiry.
Data: a signed TRS tool version whose image is the session's busybox pushed to the test
registry, a DRS object uploaded by a data steward, and a completed WES run of an analyst
(``seeded_wdl_run`` adds a WDL run with container tasks for the tests that ask for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helixgate.sdk import HelixGate
from tests.conformance.seed import Seeded, publish_tool, submit_run, submit_wdl_run, upload_object, wait_for_run
from tests.fixtures.docker_images import PushedImage
from tests.fixtures.live import LiveServer, start_server, stop_server


@pytest.fixture(scope="session")
def conformance_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("conformance")
    server = start_server(tmp, extra_env={"HELIXGATE_CLOCK_SKEW": "0"})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def seeded(conformance_live: LiveServer, pushed_busybox: PushedImage) -> Seeded:
    server = conformance_live
    tokens = {
        "developer": server.user("dev", "tool-developer"),
        "steward": server.user("steward", "data-steward"),
        "analyst": server.user("analyst", "analyst"),
        "viewer": server.user("viewer", "viewer"),
        "admin": server.admin_token(),
    }
    tool_id, version_id = publish_tool(server.url, tokens["developer"], pushed_busybox.pinned_ref)
    obj = upload_object(server.url, tokens["steward"])
    run_id = submit_run(server.url, tokens["analyst"])
    state = wait_for_run(server.url, tokens["analyst"], run_id)
    return Seeded(
        url=server.url,
        tokens=tokens,
        tool_id=tool_id,
        version_id=version_id,
        image_ref=pushed_busybox.pinned_ref,
        object_id=str(obj["id"]),
        object_sha256=next(c["checksum"] for c in obj["checksums"] if c["type"] == "sha-256"),
        run_id=run_id,
        run_state=state,
    )


@pytest.fixture(scope="session")
def seeded_wdl_run(seeded: Seeded) -> tuple[str, str]:
    """A WDL run of the analyst on the seeded server (two tasks in the seeded signed image on a
    DRS object the analyst may read): its id and final state."""
    steward = HelixGate.connect(seeded.url, seeded.tokens["steward"])
    dataset = steward.create_dataset("wdl-conformance")
    steward.grant(dataset["id"], "analyst")
    obj = steward.upload(b"ACGT\n", name="reads.txt", dataset_id=dataset["id"])
    run_id = submit_wdl_run(seeded.url, seeded.tokens["analyst"], seeded.image_ref, obj["self_uri"])
    return run_id, wait_for_run(seeded.url, seeded.tokens["analyst"], run_id, timeout=300)


@pytest.fixture()
def live_log(conformance_live: LiveServer) -> Path:
    """The shared server's log file (attach it to failure messages)."""
    return conformance_live.log_path
