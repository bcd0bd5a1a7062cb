"""Each service started alone (`serve drs`, `serve trs`, `serve wes`, `serve worker`) on its
own port, sharing one database and data directory, runs the verified workflow; Ctrl-C stops
a process cleanly and a second start reuses the data."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

import pytest

from helixgate.sdk import HelixGate
from helixgate_app.demo_assets import workflow_files
from tests.fixtures.docker_images import PushedImage, session_scope
from tests.fixtures.live import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_services_started_alone_cooperate_over_http(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared-data"
    ports = {name: free_port() for name in ("drs", "trs", "wes")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    common = {
        "HELIXGATE_DATABASE_URL": f"sqlite:///{data_dir / 'helixgate.db'}",
        "HELIXGATE_BUILTIN_ISSUER_URL": f"{urls['wes']}/oidc",
        "HELIXGATE_DRS_URL": urls["drs"],
        "HELIXGATE_TRS_URL": urls["trs"],
        "HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id),
    }
    drs = live_server_factory(extra_env=common, data_dir=data_dir, port=ports["drs"], service="drs")
    trs = live_server_factory(extra_env=common, data_dir=data_dir, port=ports["trs"], service="trs")
    wes = live_server_factory(extra_env=common, data_dir=data_dir, port=ports["wes"], service="wes")
    worker = live_server_factory(extra_env=common, data_dir=data_dir, service="worker")
    assert worker.process.poll() is None
    # each process serves only its own GA4GH API
    dev = HelixGate.connect(trs.url, wes.user("dev", "tool-developer"))
    steward = HelixGate.connect(drs.url, wes.user("steward", "data-steward"))
    analyst = HelixGate.connect(wes.url, wes.user("ann", "analyst"))
    assert dev.api.request("GET", "/ga4gh/wes/v1/service-info", ok=(404,)).status_code == 404
    ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    tool = dev.create_tool("helixgate-test", f"split-{test_session_id}")
    dev.publish_version(tool["id"], "1.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    dataset = steward.create_dataset("d")
    steward.grant(dataset["id"], "ann")
    obj = steward.upload(b"b\na\nb\n", name="t.txt", dataset_id=dataset["id"])
    assert obj["self_uri"] == f"drs://127.0.0.1:{ports['drs']}/{obj['id']}"
    run_id = analyst.submit_run(
        f"{urls['trs']}/ga4gh/trs/v2/tools/{tool['id']}/versions/1.0.0",
        {"text": {"class": "File", "location": obj["self_uri"]}},
    )
    assert analyst.wait(run_id, timeout=300) == "COMPLETE", analyst.run_log(run_id)
    out = analyst.run_log(run_id)["outputs"]["line_count"]["location"]
    assert out.startswith(f"drs://127.0.0.1:{ports['drs']}/")
    reader = HelixGate.connect(drs.url, wes.user("ann", "analyst"))
    assert b"".join(reader.download(out.rsplit("/", 1)[-1])).strip() == b"2"


def test_ctrl_c_stops_cleanly_and_a_second_start_reuses_the_data(live_server_factory: Callable[..., Any]) -> None:
    first = live_server_factory()
    steward = HelixGate.connect(first.url, first.user("steward", "data-steward"))
    obj = steward.upload(b"kept\n", name="k.txt")
    first.process.send_signal(signal.SIGINT)
    assert first.process.wait(30) == 0
    second = live_server_factory(data_dir=first.data_dir, port=first.port)
    again = HelixGate.connect(second.url, second.user("steward", "data-steward"))
    assert b"".join(again.download(obj["id"])) == b"kept\n"
    verify = second.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
