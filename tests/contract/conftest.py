"""One deployment for the port contract suite: a live ``helixgate serve`` (the HTTP side)
and, on the same database and data directory, a Platform in this process whose DRS and TRS
domains back the in-process implementations. Both implementations therefore see the same
objects, tools, keys and audit trail, and must answer alike."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helixgate.audit import AuditRecord
from helixgate.config import load_settings
from helixgate.platform import Platform
from helixgate.ports import DataPort, ToolPort
from helixgate.ports_http import http_data_port, http_tool_port
from helixgate.sdk import HelixGate
from helixgate_app.demo_assets import workflow_files
from helixgate_app.services import build_platform
from tests.fixtures.docker_images import PushedImage, session_scope
from tests.fixtures.live import LiveServer, start_server, stop_server

TEXT = b"b\na\nb\n"
IMPLEMENTATIONS = ("in-process", "http")


@dataclass
class Deployment:
    server: LiveServer
    platform: Platform
    steward: HelixGate
    tool_id: str
    image_ref: str
    image: PushedImage
    readable_id: str  # in a dataset granted to ann
    secret_id: str  # in a dataset nobody was granted
    dataset_id: str

    @property
    def service_user(self) -> str:
        return self.platform.settings.service_user

    def data_port(self, impl: str) -> DataPort:
        if impl == "in-process":
            from drs_store.port import build

            return build(self.platform)
        return http_data_port(self.platform)  # drs_url: the live server

    def tool_port(self, impl: str) -> ToolPort:
        if impl == "in-process":
            from trs_registry.port import build

            return build(self.platform)
        return http_tool_port(self.platform)  # trs_url: the live server

    def upload(self, content: bytes, name: str = "x.txt", dataset_id: str | None = None) -> str:
        return str(self.steward.upload(content, name=name, dataset_id=dataset_id or self.dataset_id)["id"])

    def last_seq(self) -> int:
        records, _ = self.platform.audit.query(page_size=1)
        return records[0].seq if records else 0

    def records_since(self, seq: int) -> list[AuditRecord]:
        """Audit records written after ``seq`` (sign-in events of fresh service tokens aside)."""
        records, _ = self.platform.audit.query(order="newest", page_size=500)
        return [r for r in reversed(records) if r.seq > seq and r.action != "auth.session"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, pushed_busybox: PushedImage, test_session_id: str
) -> Iterator[Deployment]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    server = start_server(tmp, workers=1, extra_env={"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id)})
    platform: Platform | None = None
    try:
        dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
        steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
        server.user("ann", "analyst")
        server.user("bob", "analyst")
        tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
        tool = dev.create_tool("helixgate-test", f"contract-{test_session_id}")
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            dev.publish_version(tool["id"], version, workflow_files(tag_ref), [tag_ref], primary="workflow.cwl")
        wdl = workflow_files(tag_ref, "wdl")  # 4.0.0: the same workflow in WDL only
        dev.publish_version(tool["id"], "4.0.0", wdl, [tag_ref], primary="workflow.wdl", descriptor_type="WDL")
        granted = steward.create_dataset("granted")
        steward.grant(granted["id"], "ann")
        closed = steward.create_dataset("closed")
        readable = steward.upload(TEXT, name="reads.txt", dataset_id=granted["id"])
        secret = steward.upload(b"secret\n", name="secret.txt", dataset_id=closed["id"])
        # the worker side of the same deployment: same database, data directory and keys
        platform = build_platform(load_settings(env=server.env))
        yield Deployment(
            server, platform, steward, tool["id"], tag_ref, pushed_busybox, readable["id"], secret["id"], granted["id"]
        )
    finally:
        if platform is not None:
            platform.close()
        stop_server(server)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param
