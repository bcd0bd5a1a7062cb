"""WES accepts WDL 1.0/1.1 runs from attachments, http(s) URLs and TRS tool versions, and refuses
a bad document or bad inputs with a 400 in the WES error shape naming the problem. Every
response is validated against the official WES schema (``ValidatingTestClient``); runs on
SQLite and PostgreSQL (the ``harness`` fixtures)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import Any

import pytest

from tests.fixtures.app import Harness
from tests.unit.test_trs_images import FakeOciRegistry

pytestmark = pytest.mark.integration

WES = "/ga4gh/wes/v1"
TRS_X = "/ga4gh/trs/v2/x-helixgate"

MAIN = """version 1.0
import "tasks/count.wdl" as c

workflow lines {
  input {
    Array[File] reads
    String label = "lines"
  }
  scatter (r in reads) {
    call c.count { input: f = r }
  }
  output { Array[Int] counts = count.n }
}
"""
COUNT = """version 1.0
task count {
  input { File f }
  command <<< wc -l < ~{f} >>>
  runtime { docker: "IMAGE" }
  output { Int n = read_int(stdout()) }
}
"""


def form(
    url: str = "main.wdl",
    params: dict[str, Any] | None = None,
    files: dict[str, str | bytes] | None = None,
    *,
    version_: str = "1.0",
    **extra: str,
) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [
        ("workflow_url", (None, url)),
        ("workflow_type", (None, "WDL")),
        ("workflow_type_version", (None, version_)),
        ("workflow_params", (None, json.dumps(params if params is not None else {"reads": ["drs-free.txt"]}))),
    ]
    parts += [(k, (None, v)) for k, v in extra.items()]
    attached = files if files is not None else {"main.wdl": MAIN, "tasks/count.wdl": COUNT, "drs-free.txt": "a\nb\n"}
    parts += [("workflow_attachment", (name, content)) for name, content in attached.items()]
    return parts


@pytest.fixture()
def analyst(harness: Harness) -> dict[str, str]:
    return harness.auth("ann", "analyst")


def refused(h: Harness, headers: dict[str, str], parts: list[tuple[str, Any]]) -> str:
    r = h.client.post(f"{WES}/runs", headers=headers, files=parts)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status_code"] == 400 and "Traceback" not in body["msg"]
    return str(body["msg"])


def test_service_info_lists_wdl_and_the_real_engine_versions(harness: Harness) -> None:
    info = harness.client.get(f"{WES}/service-info").json()
    assert info["workflow_type_versions"]["WDL"] == {"workflow_type_version": ["1.0", "1.1"]}
    assert info["workflow_type_versions"]["CWL"] == {"workflow_type_version": ["v1.0", "v1.1", "v1.2"]}
    assert info["workflow_engine_versions"] == {
        "cwltool": {"workflow_engine_version": [version("cwltool")]},
        "miniwdl": {"workflow_engine_version": [version("miniwdl")]},
    }


def test_an_attached_wdl_workflow_is_accepted(harness: Harness, analyst: dict[str, str]) -> None:
    r = harness.client.post(f"{WES}/runs", headers=analyst, files=form(params={"lines.reads": ["drs-free.txt"]}))
    assert r.status_code == 200, r.text
    log = harness.client.get(f"{WES}/runs/{r.json()['run_id']}", headers=analyst).json()
    request = log["request"]
    assert (request["workflow_type"], request["workflow_type_version"], request["workflow_engine"]) == (
        "WDL",
        "1.0",
        "miniwdl",
    )
    assert log["run_log"]["name"] == "main.wdl"


def test_wdl_1_1_is_accepted_and_v_spelling_normalised(harness: Harness, analyst: dict[str, str]) -> None:
    files = {"main.wdl": MAIN.replace("version 1.0", "version 1.1"), "tasks/count.wdl": COUNT.replace("1.0", "1.1")}
    r = harness.client.post(
        f"{WES}/runs", headers=analyst, files=form(params={"reads": []}, files=files, version_="v1.1")
    )
    assert r.status_code == 200, r.text
    log = harness.client.get(f"{WES}/runs/{r.json()['run_id']}", headers=analyst).json()
    assert log["request"]["workflow_type_version"] == "1.1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version_": "draft-2"}, "unsupported workflow_type_version 'draft-2' for WDL; supported: 1.0, 1.1"),
        ({"version_": "1.1"}, "workflow_type_version is 1.1 but main.wdl declares version 1.0"),
        ({"workflow_engine": "cwltool"}, "unsupported workflow_engine 'cwltool' for WDL; supported: miniwdl"),
        ({"params": {"reads": ["/etc/passwd"]}}, "File '/etc/passwd' must be a drs:// object"),
        ({"params": {"reads": ["file:///etc/shadow"]}}, "File 'file:///etc/shadow' must be a drs:// object"),
        ({"params": {"reads": ["https://example.org/r.txt"]}}, "File 'https://example.org/r.txt' must be a drs://"),
        ({"params": {"reads": ["drs-free.txt"], "nope": 1}}, "'nope' is not an input of lines"),
        ({"params": {}}, "missing required inputs"),
        ({"params": {"reads": "drs-free.txt"}}, "couldn't construct 'Array[File]'"),
        ({"params": {"reads": [], "count.runtime.docker": "evil"}}, "runtime settings cannot be set by inputs"),
        ({"files": {"main.wdl": MAIN}}, "'tasks/count.wdl' (imported by main.wdl) is not among the workflow's files"),
        (
            {"files": {"main.wdl": MAIN.replace("tasks/count.wdl", "/etc/hostname")}},
            "WDL import '/etc/hostname' (imported by main.wdl) is an absolute path",
        ),
        (
            {"files": {"main.wdl": MAIN.replace("tasks/count.wdl", "../../etc/x.wdl")}},
            "'..' is not allowed",
        ),
        (
            {"files": {"main.wdl": MAIN.replace("tasks/count.wdl", "https://example.org/count.wdl")}},
            "is a URL: imports may name only the workflow's own files",
        ),
        ({"files": {"main.wdl": "workflow w {}\n"}}, "declares version 'draft-2'"),
        ({"files": {"main.wdl": "version 1.0\nworkflow w {\n"}}, "invalid WDL document 'main.wdl': main.wdl:"),
        ({"url": "other.wdl"}, "neither an attached file"),
    ],
)
def test_bad_wdl_submissions_are_400_naming_the_problem(
    harness: Harness, analyst: dict[str, str], change: dict[str, Any], expected: str
) -> None:
    message = refused(harness, analyst, form(**change))
    assert expected in message, message
    assert harness.client.get(f"{WES}/runs", headers=analyst).json()["runs"] == []  # nothing was stored


def test_a_string_input_may_hold_any_text(harness: Harness, analyst: dict[str, str]) -> None:
    """Only File values are references: a String that looks like a URL or a path is data."""
    params = {"reads": [], "label": "https://example.org/see/file:///etc/passwd"}
    r = harness.client.post(f"{WES}/runs", headers=analyst, files=form(params=params))
    assert r.status_code == 200, r.text


def test_a_file_default_naming_a_host_file_is_refused(harness: Harness, analyst: dict[str, str]) -> None:
    hostile = 'version 1.0\nworkflow w {\n  input { File f = "/etc/passwd" }\n}\n'
    message = refused(harness, analyst, form(params={}, files={"main.wdl": hostile}))
    assert "input 'f' (its default): File '/etc/passwd'" in message


# ---------------------------------------------------------------- http(s) workflow_url
class Served:
    """A loopback HTTP server serving one WDL document (the allow-listed host of the test)."""

    def __init__(self, body: bytes) -> None:
        self.hits: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def served_wdl() -> Iterator[Served]:
    one_file = 'version 1.1\nworkflow hello {\n  input { String who }\n  output { String greeting = "hi " + who }\n}\n'
    s = Served(one_file.encode())
    yield s
    s.close()


def test_a_wdl_workflow_from_an_allowed_url(harness_factory: Callable[..., Harness], served_wdl: Served) -> None:
    h = harness_factory(outbound_allow_list=(f"127.0.0.1:{served_wdl.port}",))
    analyst = h.auth("ann", "analyst")
    url = f"http://127.0.0.1:{served_wdl.port}/hello.wdl"
    ok = h.client.post(f"{WES}/runs", headers=analyst, files=form(url, {"who": "x"}, {}, version_="1.1"))
    assert ok.status_code == 200, ok.text
    assert h.client.get(f"{WES}/runs/{ok.json()['run_id']}", headers=analyst).json()["run_log"]["name"] == (
        "workflow-hello.wdl"
    )
    bad = h.client.post(f"{WES}/runs", headers=analyst, files=form(url, {"who": 1, "x": 2}, {}, version_="1.1"))
    assert bad.status_code == 400 and "'x' is not an input of hello" in bad.json()["msg"], bad.text
    assert served_wdl.hits == ["/hello.wdl", "/hello.wdl"]


# ---------------------------------------------------------------- TRS tool versions
@pytest.fixture(scope="module")
def oci() -> Iterator[FakeOciRegistry]:
    fake = FakeOciRegistry()
    yield fake
    fake.close()


def _publish_wdl(h: Harness, oci: FakeOciRegistry) -> str:
    dev = h.auth("dev", "tool-developer")
    tool = h.client.post(f"{TRS_X}/tools", headers=dev, json={"organization": "wdl lab", "name": "lines"})
    assert tool.status_code == 201, tool.text
    oci.push("tools/lines", "1.0")
    image = f"{oci.host}/tools/lines:1.0"
    body = {
        "id": "1.0.0",
        "descriptor_type": "WDL",
        "files": [
            {"path": "main.wdl", "file_type": "PRIMARY_DESCRIPTOR", "content": MAIN},
            {"path": "tasks/count.wdl", "file_type": "SECONDARY_DESCRIPTOR", "content": COUNT.replace("IMAGE", image)},
        ],
        "images": [image],
    }
    r = h.client.post(f"{TRS_X}/tools/{tool.json()['id']}/versions", headers=dev, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["descriptor_type_version"] == {"WDL": ["1.0"]}
    return str(tool.json()["id"])


def test_a_signed_wdl_tool_version_is_accepted_by_trs_reference(
    harness_factory: Callable[..., Harness], oci: FakeOciRegistry
) -> None:
    h = harness_factory(registry_insecure_hosts=(oci.host,))
    tool_id = _publish_wdl(h, oci)
    analyst = h.auth("ann", "analyst")
    url = f"trs://{h.platform.settings.drs_host}/{tool_id}/1.0.0"
    r = h.client.post(f"{WES}/runs", headers=analyst, files=form(url, {"reads": []}, {}))
    assert r.status_code == 200, r.text
    log = h.client.get(f"{WES}/runs/{r.json()['run_id']}", headers=analyst).json()
    assert log["run_log"]["name"] == "main.wdl" and log["request"]["workflow_type"] == "WDL"
    # the same version's inputs are checked as for an attached workflow
    bad = h.client.post(f"{WES}/runs", headers=analyst, files=form(url, {"reads": ["/etc/passwd"]}, {}))
    assert bad.status_code == 400 and "must be a drs:// object" in bad.json()["msg"], bad.text
    # a WDL-only version has no CWL descriptor to run
    cwl = [(k, (None, "CWL") if k == "workflow_type" else (None, "v1.2") if k == "workflow_type_version" else v)
           for k, v in form(url, {}, {})]  # fmt: skip
    r = h.client.post(f"{WES}/runs", headers=analyst, files=cwl)
    assert r.status_code == 404 and "has no CWL descriptor" in r.json()["msg"], r.text
