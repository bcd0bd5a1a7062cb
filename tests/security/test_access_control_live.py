"""Access control and hostile input against a real ``helixgate serve`` process (issue 15):
input limits on the wire, drs:// spelled any way, the bootstrap admin across a restart,
cross-user probes in the CEF export, the tool id/alias namespace, no impersonation by
admins, and proxy headers / redirects."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from helixgate.sdk import HelixGate
from tests.fixtures.live import LiveServer, stop_server

pytestmark = [pytest.mark.integration]

WES, TRS, DRS, CORE = "/ga4gh/wes/v1", "/ga4gh/trs/v2", "/ga4gh/drs/v1", "/helixgate/v1"
WORKFLOW = b"""cwlVersion: v1.2
class: CommandLineTool
baseCommand: [cat]
inputs:
  reads: {type: File, inputBinding: {position: 1}}
outputs: []
"""
NO_INPUTS = b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo]\ninputs: []\noutputs: []\n"


def _h(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def _submit(server: LiveServer, token: str, params: dict[str, Any], workflow: bytes = WORKFLOW) -> requests.Response:
    files = [
        ("workflow_url", (None, "wf.cwl")),
        ("workflow_type", (None, "CWL")),
        ("workflow_type_version", (None, "v1.2")),
        ("workflow_params", (None, json.dumps(params))),
        ("workflow_attachment", ("wf.cwl", workflow)),
    ]
    return requests.post(f"{server.url}{WES}/runs", headers=_h(token), files=files, timeout=60)


def _cef(server: LiveServer, auditor: str) -> list[str]:
    r = server.cli("audit", "export", "--cef", token=auditor, check=True)
    return r.stdout.splitlines()


def _cef_lines_for(lines: list[str], *needles: str) -> list[str]:
    return [line for line in lines if all(n in line for n in needles)]


# --------------------------------------------------------------------------- item 1
def test_input_limits_on_the_wire(live_server: LiveServer) -> None:
    s = live_server
    auditor = s.user("audra", "auditor")
    deep = ("[" * 3000 + "]" * 3000).encode()
    # anonymous DRS POST with a deeply nested body: 400 in the DRS shape, not a 500
    r = requests.post(f"{s.url}{DRS}/objects", data=deep, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json() == {"msg": r.json()["msg"], "status_code": 400}, r.text
    assert "nested deeper" in r.json()["msg"]
    # a lone surrogate in a TRS description: 400 in the TRS shape
    dev = s.user("dora", "tool-developer")
    body = '{"organization": "o", "name": "n", "toolclass": {"name": "CommandLineTool"}, "description": "\\ud800"}'
    r = requests.post(
        f"{s.url}{TRS}/x-helixgate/tools",
        data=body.encode(),
        headers=_h(dev, **{"Content-Type": "application/json"}),
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["code"] == 400 and "surrogate" in r.json()["message"], r.text
    # audit since/until out of range once the offset is applied: 400
    for bad in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        r = requests.get(f"{s.url}{CORE}/audit/events", params={"since": bad}, headers=_h(auditor), timeout=30)
        assert r.status_code == 400, (bad, r.text)
        r = requests.get(f"{s.url}{CORE}/audit/cef", params={"until": bad}, headers=_h(auditor), timeout=30)
        assert r.status_code == 400, (bad, r.text)
    # a page token holding a huge integer, a huge TRS offset
    token = "cz" + "OTk5" * 12  # base64 of "s" + many nines
    r = requests.get(f"{s.url}{WES}/runs", params={"page_token": token}, headers=_h(auditor), timeout=30)
    assert r.status_code == 400 and r.json()["status_code"] == 400, r.text
    r = requests.get(f"{s.url}{TRS}/tools", params={"offset": "9" * 30}, timeout=30)
    assert r.status_code == 400 and r.json()["code"] == 400, r.text
    # every document serves as JSON and YAML
    for base in (WES, TRS, DRS, CORE):
        assert requests.get(f"{s.url}{base}/openapi.json", timeout=30).json()["paths"]
        r = requests.get(f"{s.url}{base}/openapi.yaml", timeout=30)
        assert r.status_code == 200 and "paths:" in r.text


# --------------------------------------------------------------------------- item 2
def test_drs_scheme_spelling_cannot_bypass_the_submission_check(live_server: LiveServer) -> None:
    s = live_server
    steward = HelixGate.connect(s.url, s.user("stella", "data-steward"))
    analyst = s.user("andy", "analyst")
    dataset = steward.create_dataset("private")
    obj = steward.upload(b"ACGT\n", name="reads.txt", dataset_id=dataset["id"])
    host = s.url.split("://", 1)[1]
    for spelling in (f"DRS://{host}/{obj['id']}", f"Drs://{host}/{obj['id']}", f"dRS://{host.upper()}/{obj['id']}"):
        r = _submit(s, analyst, {"reads": {"class": "File", "location": spelling}})
        assert r.status_code == 403, (spelling, r.text)
        assert "may not read" in r.json()["msg"] and f"drs://{host}/{obj['id']}" in r.json()["msg"]
    for spelling in (f" drs://{host}/{obj['id']}", f"\tdrs://{host}/{obj['id']}", f"drs://{host}/{obj['id']}\n"):
        r = _submit(s, analyst, {"reads": {"class": "File", "location": spelling}})
        assert r.status_code == 400 and "whitespace" in r.json()["msg"], (spelling, r.text)
    assert requests.get(f"{s.url}{WES}/runs", headers=_h(analyst), timeout=30).json()["runs"] == []
    # once granted, an upper-case spelling is accepted and stored in its canonical form
    steward.grant(dataset["id"], "andy")
    r = _submit(s, analyst, {"reads": {"class": "File", "location": f"DRS://{host}/{obj['id']}"}})
    assert r.status_code == 200, r.text
    log = requests.get(f"{s.url}{WES}/runs/{r.json()['run_id']}", headers=_h(analyst), timeout=30).json()
    assert log["request"]["workflow_params"]["reads"]["location"] == f"drs://{host}/{obj['id']}"


# --------------------------------------------------------------------------- item 3
def test_a_restart_never_resurrects_the_bootstrap_admin(
    live_server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    first = live_server_factory()
    old_admin = first.admin_token()
    root = first.user("root", "admin")  # a second administrator, made by the bootstrap admin
    r = requests.patch(
        f"{first.url}{CORE}/users/admin", headers=_h(root), json={"active": False, "roles": ["viewer"]}, timeout=30
    )
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["roles"] == ["viewer"], r.text
    assert requests.get(f"{first.url}{CORE}/users", headers=_h(old_admin), timeout=30).status_code == 403
    # the service identity's state is the administrators' decision too
    r = requests.patch(f"{first.url}{CORE}/users/helixgate-wes", headers=_h(root), json={"active": False}, timeout=30)
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    stop_server(first)
    second = live_server_factory(data_dir=first.data_dir, port=first.port)  # same deployment, same issuer URL
    r = requests.get(f"{second.url}{CORE}/users/admin", headers=_h(root), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["roles"] == ["viewer"]
    assert requests.get(f"{second.url}{CORE}/users", headers=_h(old_admin), timeout=30).status_code == 403
    service = requests.get(f"{second.url}{CORE}/users/helixgate-wes", headers=_h(root), timeout=30).json()
    assert service["active"] is False and service["roles"] == ["service"]
    # deleted is deleted too: a restart does not create it again
    assert requests.delete(f"{second.url}{CORE}/users/admin", headers=_h(root), timeout=30).status_code == 204
    stop_server(second)
    third = live_server_factory(data_dir=first.data_dir, port=first.port)
    assert requests.get(f"{third.url}{CORE}/users/admin", headers=_h(root), timeout=30).status_code == 404
    users = {
        u["username"] for u in requests.get(f"{third.url}{CORE}/users", headers=_h(root), timeout=30).json()["users"]
    }
    assert "admin" not in users and "root" in users


# --------------------------------------------------------------------------- item 4
def test_cross_user_probes_are_security_events_in_the_cef_export(live_server: LiveServer) -> None:
    s = live_server
    owner, prober = s.user("olga", "analyst"), s.user("peter", "analyst")
    dev1, dev2 = s.user("dev1", "tool-developer"), s.user("dev2", "tool-developer")
    auditor = s.user("audrey", "auditor")
    run_id = _submit(s, owner, {}, NO_INPUTS).json()["run_id"]
    rid = "probe-" + uuid.uuid4().hex[:12]
    r = requests.get(f"{s.url}{WES}/runs/{run_id}", headers=_h(prober, **{"X-Request-ID": rid}), timeout=30)
    assert r.status_code == 404 and r.json()["msg"] == f"run not found: {run_id}"  # nothing leaks
    r = requests.get(f"{s.url}{WES}/runs/{run_id}/status", headers=_h(prober), timeout=30)
    assert r.status_code == 404
    missing = requests.get(f"{s.url}{WES}/runs/{uuid.uuid4()}", headers=_h(prober), timeout=30)
    assert missing.status_code == 404 and missing.json()["msg"].startswith("run not found")  # same answer
    # TRS: editing someone else's tool is refused and recorded
    tool = requests.post(
        f"{s.url}{TRS}/x-helixgate/tools",
        headers=_h(dev1),
        timeout=30,
        json={"organization": "o", "name": "n1", "toolclass": {"name": "CommandLineTool"}},
    ).json()
    r = requests.patch(
        f"{s.url}{TRS}/x-helixgate/tools/{tool['id']}", headers=_h(dev2), json={"description": "x"}, timeout=30
    )
    assert r.status_code == 403 and r.json()["code"] == 403
    # anonymous access to an authenticated API
    assert requests.get(f"{s.url}{WES}/runs", timeout=30).status_code == 401
    # DRS: another user's private object
    steward = HelixGate.connect(s.url, s.user("stan", "data-steward"))
    obj = steward.upload(b"secret\n", name="s.txt", dataset_id=steward.create_dataset("closed")["id"])
    assert requests.get(f"{s.url}{DRS}/objects/{obj['id']}", headers=_h(prober), timeout=30).status_code in (403, 404)

    lines = _cef(s, auditor)
    hidden = _cef_lines_for(lines, "suser=peter", f"cs2={run_id}", "cs3=wes")
    assert len(hidden) >= 2, "\n".join(lines[-20:])
    probe = _cef_lines_for(hidden, f"cs1={rid}")
    assert len(probe) == 1
    assert "src=127.0.0.1" in probe[0] and '"operation":"GetRunLog"' in probe[0] and '"hidden":true' in probe[0]
    assert "act=auth.denied" in probe[0]
    trs = _cef_lines_for(lines, "suser=dev2", "cs3=trs", "act=auth.denied")
    assert trs and '"operation":"updateTool"' in trs[0]
    assert _cef_lines_for(lines, "act=auth.failed", "cs3=wes", '"operation":"ListRuns"')
    drs = _cef_lines_for(lines, "suser=peter", "cs3=drs", '"operation":"GetObject"')
    assert drs and all("cs1=" in line and "src=127.0.0.1" in line for line in drs)


# --------------------------------------------------------------------------- item 5
def test_tool_ids_and_aliases_share_one_namespace(live_server: LiveServer) -> None:
    s = live_server
    alice, mallory = s.user("alice", "tool-developer"), s.user("mallory", "tool-developer")
    base = f"{s.url}{TRS}/x-helixgate/tools"

    def create(token: str, name: str, aliases: list[str]) -> requests.Response:
        body = {"organization": "lab", "name": name, "toolclass": {"name": "CommandLineTool"}, "aliases": aliases}
        return requests.post(base, headers=_h(token), json=body, timeout=30)

    real = create(alice, "aligner", ["lab/aligner-classic", "aligner-legacy"])
    assert real.status_code == 201, real.text
    real_id = real.json()["id"]
    # squatting the other tool's id as an alias: at creation and by edit
    r = create(mallory, "impostor", [real_id])
    assert r.status_code == 409 and r.json() == {"code": 409, "message": r.json()["message"]}, r.text
    own = create(mallory, "impostor", [])
    assert own.status_code == 201
    r = requests.patch(f"{base}/{own.json()['id']}", headers=_h(mallory), json={"aliases": [real_id]}, timeout=30)
    assert r.status_code == 409 and r.json()["code"] == 409, r.text
    # another tool's alias, and a new tool whose id is an existing alias
    r = requests.patch(
        f"{base}/{own.json()['id']}", headers=_h(mallory), json={"aliases": ["lab/aligner-classic"]}, timeout=30
    )
    assert r.status_code == 409
    assert create(mallory, "x", [own.json()["id"]]).status_code == 409  # an alias equal to another tool's id
    body = {"id": "aligner-legacy", "organization": "lab", "name": "legacy", "toolclass": {"name": "CommandLineTool"}}
    r = requests.post(base, headers=_h(mallory), json=body, timeout=30)  # a tool id equal to an existing alias
    assert r.status_code == 409 and "alias" in r.json()["message"], r.text
    found = requests.get(f"{s.url}{TRS}/tools", params={"alias": real_id}, timeout=30).json()
    assert [t["id"] for t in found] in ([], [real_id])
    found = requests.get(f"{s.url}{TRS}/tools", params={"alias": "lab/aligner-classic"}, timeout=30).json()
    assert [t["id"] for t in found] == [real_id]


# --------------------------------------------------------------------------- item 6
def test_admins_cannot_impersonate_anyone(live_server: LiveServer) -> None:
    s = live_server
    admin = s.admin_token()
    steward = HelixGate.connect(s.url, s.user("sara", "data-steward"))
    s.user("victor", "viewer")
    auditor = s.user("aud", "auditor")
    service_user = "helixgate-wes"
    for target in (service_user, "victor", "sara"):
        r = requests.post(
            f"{s.url}{CORE}/tokens", headers=_h(admin), json={"username": target, "ttl": "5m"}, timeout=30
        )
        assert r.status_code == 403, (target, r.text)
    r = requests.post(f"{s.url}{CORE}/tokens", headers=_h(admin), json={"username": "admin", "ttl": "5m"}, timeout=30)
    assert r.status_code == 201  # for itself only
    # the service role is not granted over the API, neither to itself nor to a new user
    r = requests.patch(
        f"{s.url}{CORE}/users/admin", headers=_h(admin), json={"roles": ["admin", "service"]}, timeout=30
    )
    assert r.status_code == 403, r.text
    r = requests.post(
        f"{s.url}{CORE}/users",
        headers=_h(admin),
        timeout=30,
        json={"username": "svc2", "roles": ["service"], "active": True},
    )
    assert r.status_code == 403, r.text
    r = requests.patch(f"{s.url}{CORE}/users/{service_user}", headers=_h(admin), json={"roles": ["admin"]}, timeout=30)
    assert r.status_code == 403
    me = requests.get(f"{s.url}{CORE}/me", headers=_h(admin), timeout=30).json()
    assert "service" not in me["roles"]
    # the delegation header does nothing for an admin: no read of a steward's private object
    dataset = steward.create_dataset("secret")
    obj = steward.upload(b"private\n", name="p.txt", dataset_id=dataset["id"])
    r = requests.get(
        f"{s.url}{DRS}/objects/{obj['id']}", headers=_h(admin, **{"X-HelixGate-On-Behalf-Of": "sara"}), timeout=30
    )
    assert r.status_code == 403 and "on behalf" in r.json()["msg"], r.text
    assert requests.get(f"{s.url}{DRS}/objects/{obj['id']}", headers=_h(admin), timeout=30).status_code in (403, 404)
    lines = _cef(s, auditor)
    assert len(_cef_lines_for(lines, "suser=admin", '"operation":"IssueToken"', "act=auth.denied")) == 3
    assert _cef_lines_for(lines, "suser=admin", "act=auth.denied", "cs3=drs")


# --------------------------------------------------------------------------- item 7
def test_proxy_headers_only_from_trusted_proxies_and_redirects_use_the_public_url(
    live_server_factory: Callable[..., LiveServer],
) -> None:
    plain = live_server_factory()
    auditor = plain.user("aud", "auditor")
    rid = "xff-" + uuid.uuid4().hex[:12]
    requests.get(f"{plain.url}{WES}/runs", headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": rid}, timeout=30)
    r = requests.get(
        f"{plain.url}{CORE}/audit/events", params={"category": "security"}, headers=_h(auditor), timeout=30
    )
    mine = [e for e in r.json()["events"] if e["request_id"] == rid]
    assert mine and all(e["client_addr"] == "127.0.0.1" for e in mine), mine
    r = requests.get(
        f"{plain.url}{TRS}/tools/",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code in (301, 307, 308), r.text
    assert r.headers["Location"] == f"{plain.url}{TRS}/tools"
    stop_server(plain)

    proxied = live_server_factory(extra_env={"HELIXGATE_TRUSTED_PROXIES": "127.0.0.1/32,10.0.0.0/8"})
    auditor = proxied.user("aud", "auditor")
    rid = "xff-" + uuid.uuid4().hex[:12]
    # the rightmost address that is not a trusted proxy is the client
    requests.get(
        f"{proxied.url}{WES}/runs",
        timeout=30,
        headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.2.3", "X-Request-ID": rid},
    )
    r = requests.get(
        f"{proxied.url}{CORE}/audit/events", params={"category": "security"}, headers=_h(auditor), timeout=30
    )
    mine = [e for e in r.json()["events"] if e["request_id"] == rid]
    assert mine and all(e["client_addr"] == "203.0.113.9" for e in mine), mine
    r = requests.get(f"{proxied.url}{TRS}/tools/", headers={"Host": "evil.example"}, allow_redirects=False, timeout=30)
    assert r.headers["Location"] == f"{proxied.url}{TRS}/tools"


def test_a_configured_public_url_is_what_redirects_name(live_server_factory: Callable[..., LiveServer]) -> None:
    s = live_server_factory(extra_env={"HELIXGATE_PUBLIC_URL": "https://helixgate.example.org"})
    r = requests.get(
        f"http://127.0.0.1:{s.port}{TRS}/tools/", headers={"Host": "evil.example"}, allow_redirects=False, timeout=30
    )
    assert r.headers["Location"] == f"https://helixgate.example.org{TRS}/tools"
    info = requests.get(f"http://127.0.0.1:{s.port}{DRS}/openapi.json", timeout=30).json()
    assert info["servers"] == [{"url": f"https://helixgate.example.org{DRS}"}]
