"""Shared set-up for end-to-end tests: a live server whose containers carry this test
session's scope, and a published, signed text-processing tool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from helixgate.sdk import HelixGate
from helixgate_app.demo_assets import workflow_files
from tests.fixtures.docker_images import PushedImage, session_scope


@dataclass
class World:
    server: Any
    dev: HelixGate
    steward: HelixGate
    analyst: HelixGate
    tool_id: str
    version_id: str
    image: PushedImage
    dataset_id: str
    drs_host: str

    def drs_uri(self, object_id: str) -> str:
        return f"drs://{self.drs_host}/{object_id}"


def make_world(
    live_server_factory: Callable[..., Any],
    pushed_busybox: PushedImage,
    test_session_id: str,
    extra_env: dict[str, str] | None = None,
) -> World:
    """A live server (with ``extra_env``), its users and a published, signed tool."""
    server = live_server_factory(
        extra_env={"HELIXGATE_CONTAINER_SCOPE": session_scope(test_session_id), **(extra_env or {})}
    )
    dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    analyst = HelixGate.connect(server.url, server.user("ann", "analyst"))
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    tool = dev.create_tool("helixgate-test", f"textkit-{test_session_id}")
    dev.publish_version(tool["id"], "1.0.0", workflow_files(tag_ref), [tag_ref], primary="workflow.cwl")
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], "ann")
    return World(
        server, dev, steward, analyst, tool["id"], "1.0.0", pushed_busybox, dataset["id"], server.url.split("://")[1]
    )


@pytest.fixture()
def world_factory(
    live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str
) -> Callable[..., World]:
    def make(extra_env: dict[str, str] | None = None) -> World:
        return make_world(live_server_factory, pushed_busybox, test_session_id, extra_env)

    return make


@pytest.fixture()
def world(live_server_factory: Callable[..., Any], pushed_busybox: PushedImage, test_session_id: str) -> World:
    return make_world(live_server_factory, pushed_busybox, test_session_id)
