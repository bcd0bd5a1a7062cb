"""Hostile request content through the HTTP API (in process): path traversal in attachment
names, oversize JSON bodies, SSRF through ``workflow_url`` and DRS registration, and log
injection into the audit trail's CEF export."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import boto3
import pytest

from tests.fixtures.app import Harness
from tests.security.conftest import bearer, signed

pytestmark = pytest.mark.integration

WES = "/ga4gh/wes/v1"
WORKFLOW = b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo]\ninputs: []\noutputs: []\n"


class Canary:
    """A loopback HTTP server that counts every request (proof that nothing was fetched),
    serves a workflow at /wf.cwl and redirects /go?to=<url>."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.hits.append(self.path)
                if self.path.startswith("/go?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/go?to=") :])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(WORKFLOW)))
                self.end_headers()
                self.wfile.write(WORKFLOW)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def canaries() -> Iterator[tuple[Canary, Canary]]:
    a, b = Canary(), Canary()
    yield a, b
    a.close()
    b.close()


def _run_form(workflow_url: str, attachments: dict[str, bytes] | None = None) -> list[tuple[str, Any]]:
    parts: list[tuple[str, Any]] = [
        ("workflow_url", (None, workflow_url)),
        ("workflow_type", (None, "CWL")),
        ("workflow_type_version", (None, "v1.2")),
        ("workflow_params", (None, "{}")),
    ]
    parts += [("workflow_attachment", (name, content)) for name, content in (attachments or {}).items()]
    return parts


# --------------------------------------------------------------------------- path traversal
@pytest.mark.parametrize(
    "name",
    ["../escape.cwl", "../../../../etc/cron.d/x", "/etc/passwd", "a/../../b.cwl", "a/./b.cwl", "a//b.cwl",
     "C:\\evil.cwl", "..\\..\\evil.cwl", "a\x00b.cwl", "%2e%2e/evil.cwl", ".."],
)
def test_attachment_path_traversal_is_400_and_nothing_is_stored(hostile: Harness, name: str) -> None:
    analyst = hostile.auth("ann", "analyst")
    r = hostile.client.post(f"{WES}/runs", headers=analyst, files=_run_form("wf.cwl", {"wf.cwl": WORKFLOW, name: b"x"}))
    assert r.status_code == 400, (name, r.status_code, r.text)
    assert "attachment" in r.json()["msg"]
    assert hostile.client.get(f"{WES}/runs", headers=analyst).json()["runs"] == []


def test_trs_relative_path_traversal_never_reaches_the_filesystem(hostile: Harness) -> None:
    """Descriptor files are rows in the database, not paths: a traversal is simply not found."""
    for rel in ("../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"):
        r = hostile.client.get(f"/ga4gh/trs/v2/tools/x/versions/1.0.0/CWL/descriptor/{rel}")
        assert r.status_code in (308, 400, 404), (rel, r.status_code)  # 308: werkzeug merges "//"
        assert r.headers.get("location", "/").startswith("/")
        assert "root:" not in r.text


# --------------------------------------------------------------------------- oversize bodies
def test_json_body_beyond_the_limit_is_413_before_parsing(hostile_factory: Callable[..., Harness]) -> None:
    h = hostile_factory(max_json_bytes=64 * 1024)
    steward = h.auth("sue", "data-steward")
    big = json.dumps({"name": "d", "description": "x" * (256 * 1024)})
    r = h.client.post("/ga4gh/drs/v1/x-helixgate/datasets", headers={**steward, "Content-Type": "application/json"},
                      content=big)
    assert r.status_code == 413, r.text
    assert r.json()["status_code"] == 413 and "65536" in r.json()["msg"]
    # within the limit the same request works
    r = h.client.post("/ga4gh/drs/v1/x-helixgate/datasets", headers=steward, json={"name": "d"})
    assert r.status_code in (200, 201), r.text


def test_multipart_run_request_beyond_the_limit_is_413(hostile_factory: Callable[..., Harness]) -> None:
    h = hostile_factory(max_json_bytes=256 * 1024, max_attachment_bytes=128 * 1024)
    analyst = h.auth("ann", "analyst")
    huge = _run_form("wf.cwl", {"wf.cwl": WORKFLOW, "blob.bin": b"\0" * (1024 * 1024)})
    r = h.client.post(f"{WES}/runs", headers=analyst, files=huge)
    assert r.status_code == 413, r.text
    # under the body limit but over the attachment limit: still 413, and nothing stored
    over_attachment_limit = _run_form("wf.cwl", {"wf.cwl": WORKFLOW, "b": b"\0" * 200_000})
    r = h.client.post(f"{WES}/runs", headers=analyst, files=over_attachment_limit)
    assert r.status_code == 413, r.text
    assert h.client.get(f"{WES}/runs", headers=analyst).json()["runs"] == []


def test_drs_upload_beyond_the_limit_is_413_and_stores_nothing(hostile_factory: Callable[..., Harness]) -> None:
    h = hostile_factory(max_upload_bytes=100_000)
    steward = h.auth("sue", "data-steward")
    r = h.client.post("/ga4gh/drs/v1/x-helixgate/objects", params={"name": "x"},
                      headers={**steward, "Content-Type": "application/octet-stream"}, content=b"\0" * 300_000)
    assert r.status_code == 413, r.text
    assert not list(h.platform.settings.data_dir.rglob("*.blob"))


# --------------------------------------------------------------------------- SSRF
def _ssrf_targets(canary: Canary) -> list[str]:
    p = canary.port
    return [
        f"http://127.0.0.1:{p}/wf.cwl",
        f"http://localhost:{p}/wf.cwl",
        f"http://[::1]:{p}/wf.cwl",
        f"http://[::ffff:127.0.0.1]:{p}/wf.cwl",
        f"http://2130706433:{p}/wf.cwl",  # 127.0.0.1 as one decimal number
        f"http://0.0.0.0:{p}/wf.cwl",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/wf.cwl",
        "http://10.0.0.1/wf.cwl",
        "http://192.168.1.1/wf.cwl",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{p}/wf.cwl",
        f"gopher://127.0.0.1:{p}/_x",
    ]


def test_ssrf_through_workflow_url_is_refused_and_audited(hostile: Harness, canaries: tuple[Canary, Canary]) -> None:
    canary, _ = canaries
    analyst = hostile.auth("ann", "analyst")
    for url in _ssrf_targets(canary):
        r = hostile.client.post(f"{WES}/runs", headers=analyst, files=_run_form(url))
        assert r.status_code in (400, 403), (url, r.status_code, r.text)
    assert canary.hits == []  # not a single request reached the loopback service
    page, _ = hostile.platform.audit.query(category="security", action_prefix="auth.denied", actor="ann")
    reasons = [e.details.get("reason", "") for e in page]
    assert sum("non-public address" in r for r in reasons) >= 8, reasons
    assert hostile.client.get(f"{WES}/runs", headers=analyst).json()["runs"] == []


def test_ssrf_redirect_to_loopback_or_metadata_is_refused(
    hostile_factory: Callable[..., Harness], canaries: tuple[Canary, Canary]
) -> None:
    allowed, internal = canaries
    h = hostile_factory(outbound_allow_list=(f"127.0.0.1:{allowed.port}",))
    analyst = h.auth("ann", "analyst")
    for target in (f"http://127.0.0.1:{internal.port}/wf.cwl", f"http://localhost:{internal.port}/wf.cwl",
                   "http://169.254.169.254/latest/meta-data/"):
        r = h.client.post(f"{WES}/runs", headers=analyst, files=_run_form(f"http://127.0.0.1:{allowed.port}/go?to={target}"))
        assert r.status_code == 403, (target, r.text)
        assert "non-public address" in r.json()["msg"]
    assert internal.hits == []
    assert len(allowed.hits) == 3  # the allow-listed hop was fetched, the redirect was not followed


def test_ssrf_allow_list_admits_only_the_named_host(
    hostile_factory: Callable[..., Harness], canaries: tuple[Canary, Canary]
) -> None:
    allowed, other = canaries
    h = hostile_factory(outbound_allow_list=(f"127.0.0.1:{allowed.port}",))
    analyst = h.auth("ann", "analyst")
    r = h.client.post(f"{WES}/runs", headers=analyst, files=_run_form(f"http://127.0.0.1:{allowed.port}/wf.cwl"))
    assert r.status_code == 200, r.text
    r = h.client.post(f"{WES}/runs", headers=analyst, files=_run_form(f"http://127.0.0.1:{other.port}/wf.cwl"))
    assert r.status_code == 403
    assert other.hits == []


def test_drs_registration_cannot_reach_loopback_or_metadata(
    hostile_factory: Callable[..., Harness], aws_env: str, canaries: tuple[Canary, Canary]
) -> None:
    """Registration takes only s3://<allowed bucket>/<key> and talks to the configured S3
    endpoint: a URL cannot choose the host."""
    canary, _ = canaries
    bucket = f"hg-ssrf-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    h = hostile_factory(storage_backend="s3", s3_bucket=bucket, s3_endpoint_url=aws_env)
    steward = h.auth("sue", "data-steward")
    urls = [
        f"http://127.0.0.1:{canary.port}/wf.cwl",
        "http://169.254.169.254/latest/meta-data/",
        f"https://[::1]:{canary.port}/x",
        "s3://169.254.169.254/latest/meta-data/",
        "s3://127.0.0.1/x",
        f"s3://localhost:{canary.port}/x",
        "s3://[::1]/x",
        f"s3://{bucket}@127.0.0.1:{canary.port}/x",
        "s3://other-bucket/x",
        "file:///etc/passwd",
    ]
    for url in urls:
        r = h.client.post("/ga4gh/drs/v1/x-helixgate/registrations", headers=steward, json={"url": url, "name": "x"})
        assert r.status_code in (400, 403), (url, r.status_code, r.text)
    assert canary.hits == []


# --------------------------------------------------------------------------- log injection
CEF_LINE = re.compile(r"^CEF:0\|HelixGate\|helixgate\|[^|]*\|[^|]*\|[^|]*\|\d+\|")


def test_log_injection_in_audit_fields_keeps_cef_one_line_per_event(hostile: Harness) -> None:
    forged = "CEF:0|HelixGate|helixgate|1|auth.session|Token accepted|1|suser=admin act=auth.session"
    # 1) a username with CR/LF (as a hostile IdP could send it) is refused at verification
    r = hostile.client.get("/helixgate/v1/me", headers=bearer(signed(hostile, sub="eve\r\n" + forged)))
    assert r.status_code == 401 and "not a valid username" in r.json()["msg"]
    # 2) a printable username full of CEF separators reaches the trail (as the denied actor)
    evil_user = "eve|suser=admin " + forged
    r = hostile.client.get("/helixgate/v1/me", headers=bearer(signed(hostile, sub=evil_user)))
    assert r.status_code == 403 and "not registered" in r.json()["msg"]
    # 3) a request path with encoded CR/LF is refused before routing; one with U+2028 and separators is audited
    r = hostile.client.get(f"{WES}/runs/abc%0D%0ACEF:0%7Cx%7Cy%3Dz/status")
    assert r.status_code == 400 and "control characters" in r.json()["msg"]
    r = hostile.client.get(f"{WES}/runs/abc%E2%80%A8CEF:0%7Cx%7Cy%3Dz/status")
    assert r.status_code == 401
    # 4) an X-Request-ID with separators (CR/LF are refused by HTTP itself) is replaced, never echoed
    r = hostile.client.get("/helixgate/v1/me", headers={"X-Request-ID": "abcdefgh|CEF:0|x=y"})
    assert r.status_code == 401
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])

    events, _ = hostile.platform.audit.query(category="security", page_size=500)
    lines = list(hostile.platform.audit.export_cef())
    assert len(lines) == len(events) >= 4
    lines_all = list(hostile.platform.audit.export_cef(category=None))  # request records carry the path
    assert len("\n".join(lines_all).splitlines()) == len(lines_all)  # no value added a line break
    for line in lines_all:
        assert CEF_LINE.match(line), line
        assert "\r" not in line and "\u2028" not in line
        header, ext = line.split("|", 7)[:7], line.split("|", 7)[7]
        assert header[:3] == ["CEF:0", "HelixGate", "helixgate"]
        # '=' inside values is escaped, so no value can add or repeat a key
        keys = re.findall(r"(?:^| )([A-Za-z0-9]+)=", ext.replace("\\=", ""))
        assert len(keys) == len(set(keys)), line
    denied = [line for line in lines if "act=auth.denied" in line]
    assert len(denied) == 1
    escaped_user = "suser=eve|suser\\=admin CEF:0|HelixGate|helixgate|1|auth.session|Token accepted|1|suser\\=admin"
    assert escaped_user in denied[0]
    path_event = next(line for line in lines_all if "abc" in line and "act=wes.GetRunStatus" in line)
    assert "abc CEF:0|x|y\\=z" in path_event  # U+2028 became a space, '=' escaped
