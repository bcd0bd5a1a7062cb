"""cwltool's own TRS resolver against a served registry (the pre-2.0 ``/api/ga4gh/v2`` paths).

cwltool --enable-ga4gh-tool-registry --add-ga4gh-tool-registry <public url>/ga4gh/trs/v2 <tool id>:<version>
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from cwltool import resolver as cwl_resolver
from cwltool.main import main as cwltool_main

from helixgate.db import Database
from helixgate.platform import Platform
from helixgate.web import create_app
from helixgate_app.services import build_platform, named
from tests.fixtures.app import make_settings
from tests.unit.test_trs_images import FakeOciRegistry

pytestmark = pytest.mark.integration

WORKFLOW = """cwlVersion: v1.2
class: Workflow
inputs:
  message: string
outputs:
  out:
    type: string
    outputSource: say/out
steps:
  say:
    run: tools/sub/step.cwl
    in: {message: message}
    out: [out]
"""
STEP = """cwlVersion: v1.2
class: ExpressionTool
requirements: {InlineJavascriptRequirement: {}}
inputs:
  message: string
outputs:
  out: string
expression: '$({"out": inputs.message})'
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def served(tmp_path: Path, sqlite_database: Database) -> Iterator[tuple[str, Platform]]:
    oci = FakeOciRegistry()
    port = _free_port()
    settings = make_settings(tmp_path / "data", sqlite_database, port=port, registry_insecure_hosts=(oci.host,))
    platform = build_platform(settings)
    platform.served = frozenset({"trs"})
    oci.push("tools/echo", "1.0")
    server = uvicorn.Server(
        uvicorn.Config(create_app(lambda: platform, named(("trs",))), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/ga4gh/trs/v2"
    for _ in range(100):
        try:
            requests.get(f"{base}/service-info", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    assert platform.issuer is not None
    platform.users.register("alice", roles=("tool-developer",), active=True)
    token = platform.issuer.issue("alice", 300)
    headers = {"Authorization": f"Bearer {token}"}
    r = requests.post(
        f"{base}/x-helixgate/tools",
        json={"id": "org.example.echo", "organization": "example", "name": "echo", "toolclass": "Workflow"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        f"{base}/x-helixgate/tools/org.example.echo/versions",
        headers=headers,
        json={
            "id": "1.0.0",
            "files": [
                {"path": "echo.cwl", "file_type": "PRIMARY_DESCRIPTOR", "content": WORKFLOW},
                {"path": "tools/sub/step.cwl", "file_type": "SECONDARY_DESCRIPTOR", "content": STEP},
            ],
            "images": [f"{oci.host}/tools/echo:1.0"],
        },
    )
    assert r.status_code == 201, r.text
    try:
        yield base, platform
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        platform.close()
        oci.close()


def test_cwltool_resolves_and_validates_a_tool_from_the_registry(
    served: tuple[str, Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = served

    class Loader:
        session = requests.Session()

    monkeypatch.setattr(cwl_resolver, "ga4gh_tool_registries", [base])
    url = cwl_resolver.resolve_ga4gh_tool(Loader(), "org.example.echo:1.0.0")  # type: ignore[arg-type]
    assert url == f"{base}/api/ga4gh/v2/tools/org.example.echo/versions/1.0.0/plain-CWL/descriptor/echo.cwl"
    # Dockstore-style ids and 'latest' (what cwltool asks for without a version) resolve too
    dockstore = cwl_resolver.resolve_ga4gh_tool(Loader(), "#workflow/org.example.echo")  # type: ignore[arg-type]
    assert dockstore == url.replace("org.example.echo/versions/1.0.0", "%23workflow%2Forg.example.echo/versions/latest")
    assert requests.get(str(dockstore), timeout=10).text == WORKFLOW

    # the whole CLI: resolution, the primary descriptor, and its nested relative import
    out, err = io.StringIO(), io.StringIO()
    code = cwltool_main(
        ["--enable-ga4gh-tool-registry", "--add-ga4gh-tool-registry", base, "--validate", "org.example.echo:1.0.0"],
        stdout=out,
        stderr=err,
    )
    assert code == 0, err.getvalue()[-2000:]
    assert "is valid CWL" in out.getvalue() + err.getvalue()
