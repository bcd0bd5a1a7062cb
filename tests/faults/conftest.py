"""Shared set-up for the fault-injection tests: a fresh PostgreSQL database per test, a
published signed tool on any live server, small workflows, and accounting helpers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from helixgate.sdk import TERMINAL, HelixGate
from helixgate_app.demo_assets import workflow_files
from tests.e2e.conftest import World
from tests.fixtures.docker_images import PushedImage
from tests.fixtures.services import drop_postgres_database, fresh_postgres_database


@pytest.fixture()
def pg_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for one test, dropped afterwards."""
    url, name = fresh_postgres_database(postgres_url)
    yield url
    drop_postgres_database(postgres_url, name)


def make_world(server: Any, image: PushedImage, *, analyst: str = "ann") -> World:
    dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    ana = HelixGate.connect(server.url, server.user(analyst, "analyst"))
    tag_ref = f"{image.repository}:{image.tag}"
    tool = dev.create_tool("helixgate-test", f"faults-{uuid.uuid4().hex[:8]}")
    dev.publish_version(tool["id"], "1.0.0", workflow_files(tag_ref), [tag_ref], primary="workflow.cwl")
    dataset = steward.create_dataset("reads")
    steward.grant(dataset["id"], analyst)
    return World(server, dev, steward, ana, tool["id"], "1.0.0", image, dataset["id"], server.url.split("://")[1])


def tool_cwl(image: str, script: str) -> bytes:
    """A one-step tool reading one File input and running ``script`` (``$0`` is the input path)."""
    escaped = script.replace("'", "'\"'\"'")
    return f"""cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
baseCommand: [sh, -c, '{escaped}']
inputs:
  text: {{type: File, inputBinding: {{position: 1}}}}
outputs:
  out: {{type: stdout}}
stdout: out.txt
""".encode()


def wait_all(client: HelixGate, run_ids: list[str], *, timeout: float) -> dict[str, str]:
    """Poll until every run is terminal (bounded); return run id -> state."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for run_id in run_ids:
            if states.get(run_id) not in TERMINAL:
                try:
                    states[run_id] = client.run_status(run_id)
                except Exception:  # noqa: BLE001 - a fault is in progress; keep polling within the deadline
                    pass
        if len(states) == len(run_ids) and all(s in TERMINAL for s in states.values()):
            return states
        time.sleep(0.5)
    pending = {r: s for r, s in states.items() if s not in TERMINAL}
    raise AssertionError(f"runs not terminal after {timeout}s: {pending}")


def all_run_ids(client: HelixGate) -> list[str]:
    """Every run the caller can see, through the paged listing (duplicates kept, to be counted)."""
    out: list[str] = []
    token = ""
    for _ in range(1000):
        page = client.api.get_json(
            "/ga4gh/wes/v1/runs", params={"page_size": 100, **({"page_token": token} if token else {})}
        )
        out += [r["run_id"] for r in page["runs"]]
        token = page.get("next_page_token") or ""
        if not token:
            return out
    raise AssertionError("run listing did not end")


def db_count(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()
