"""Privilege escalation attempts through the HTTP API: a viewer reaching admin, auditor or
publisher functions; an analyst reading, cancelling or impersonating another user's run; a
user granting itself roles or minting tokens. Each is a 403/404 and a security event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.app import Harness

pytestmark = pytest.mark.integration

WES = "/ga4gh/wes/v1"
WORKFLOW = b"""cwlVersion: v1.2
class: CommandLineTool
baseCommand: [echo, hi]
inputs: []
outputs: []
"""


def _submit(h: Harness, headers: dict[str, str]) -> str:
    files = [
        ("workflow_url", (None, "wf.cwl")),
        ("workflow_type", (None, "CWL")),
        ("workflow_type_version", (None, "v1.2")),
        ("workflow_params", (None, "{}")),
        ("workflow_attachment", ("wf.cwl", WORKFLOW)),
    ]
    r = h.client.post(f"{WES}/runs", headers=headers, files=files)
    assert r.status_code == 200, r.text
    return str(r.json()["run_id"])


def _denials(h: Harness, actor: str) -> list[Any]:
    page, _ = h.platform.audit.query(category="security", action_prefix="auth.denied", actor=actor)
    return list(page)


VIEWER_FORBIDDEN = [
    ("GET", "/helixgate/v1/users", None),
    ("POST", "/helixgate/v1/users", {"username": "mallory", "roles": ["admin"], "active": True}),
    ("PATCH", "/helixgate/v1/users/victor", {"roles": ["admin"]}),
    ("DELETE", "/helixgate/v1/users/root", None),
    ("POST", "/helixgate/v1/tokens", {"username": "root"}),
    ("GET", "/helixgate/v1/audit/events", None),
    ("GET", "/helixgate/v1/audit/verify", None),
    ("POST", "/ga4gh/trs/v2/x-helixgate/signing/keys/rotate", None),
    ("POST", "/ga4gh/trs/v2/x-helixgate/tools", {"organization": "o", "name": "n"}),
    ("POST", "/ga4gh/drs/v1/x-helixgate/datasets", {"name": "d"}),
    ("GET", f"{WES}/runs?page_size=1", None),  # control for wes:read: allowed (not in the loop below)
]


def test_viewer_cannot_reach_admin_auditor_or_write_functions(hostile: Harness) -> None:
    hostile.user("root", "admin")
    viewer = hostile.auth("victor", "viewer")
    forbidden = VIEWER_FORBIDDEN[:-1]
    for method, path, body in forbidden:
        r = hostile.client.request(method, path, headers=viewer, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "permission denied" in r.text
    r = hostile.client.post(f"{WES}/runs", headers=viewer, files=[("workflow_url", (None, "x.cwl"))])
    assert r.status_code == 403 and "wes:submit" in r.json()["msg"]
    assert hostile.client.get(VIEWER_FORBIDDEN[-1][1], headers=viewer).status_code == 200
    assert len(_denials(hostile, "victor")) == len(forbidden) + 1
    # nothing changed: victor is still a viewer, no user was made, root still exists
    admin = hostile.auth("root", "admin")
    users = {u["username"]: u for u in hostile.client.get("/helixgate/v1/users", headers=admin).json()["users"]}
    assert users["victor"]["roles"] == ["viewer"] and "mallory" not in users and "root" in users


def test_post_runs_without_content_type_is_400_not_500(hostile: Harness) -> None:
    r = hostile.client.post(f"{WES}/runs", headers=hostile.auth("ann", "analyst"))
    assert r.status_code == 400, r.text
    assert "Content-Type" in r.json()["msg"]


def test_analyst_cannot_grant_itself_roles_or_mint_tokens(hostile: Harness) -> None:
    analyst = hostile.auth("ann", "analyst")
    r = hostile.client.patch("/helixgate/v1/users/ann", headers=analyst, json={"roles": ["admin"]})
    assert r.status_code == 403
    r = hostile.client.post("/helixgate/v1/tokens", headers=analyst, json={"username": "admin"})
    assert r.status_code == 403
    me = hostile.client.get("/helixgate/v1/me", headers=analyst).json()
    assert "admin:users" not in me["permissions"]


def test_analyst_cannot_read_cancel_or_list_another_users_run(hostile: Harness) -> None:
    alice = hostile.auth("alice", "analyst")
    bob = hostile.auth("bob", "analyst")
    run_id = _submit(hostile, alice)
    paths = [
        f"{WES}/runs/{run_id}",
        f"{WES}/runs/{run_id}/status",
        f"{WES}/runs/{run_id}/tasks",
        f"{WES}/runs/{run_id}/tasks/any-task",
        f"{WES}/x-helixgate/runs/{run_id}/log/stdout",
        f"{WES}/x-helixgate/runs/{run_id}/log/stderr",
        f"{WES}/x-helixgate/runs/{run_id}/tasks/any-task/stdout",
        f"{WES}/x-helixgate/runs/{run_id}/evidence",
    ]
    for path in paths:
        r = hostile.client.get(path, headers=bob)
        # other users' runs are indistinguishable from missing ones
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
        assert "WORKFLOW" not in r.text and "echo" not in r.text
        assert hostile.client.get(path, headers=alice).status_code in (200, 404)  # control (task ids are fake)
    assert hostile.client.post(f"{WES}/runs/{run_id}/cancel", headers=bob).status_code in (403, 404)
    assert hostile.client.get(f"{WES}/runs/{run_id}/status", headers=alice).json()["state"] == "QUEUED"
    assert [r["run_id"] for r in hostile.client.get(f"{WES}/runs", headers=bob).json()["runs"]] == []
    assert [r["run_id"] for r in hostile.client.get(f"{WES}/runs", headers=alice).json()["runs"]] == [run_id]


def test_analyst_cannot_impersonate_through_the_delegation_header(hostile: Harness) -> None:
    hostile.user("alice", "analyst")
    run_id = _submit(hostile, hostile.auth("alice", "analyst"))
    bob = {**hostile.auth("bob", "analyst"), "X-HelixGate-On-Behalf-Of": "alice"}
    r = hostile.client.get(f"{WES}/runs/{run_id}", headers=bob)
    assert r.status_code == 403 and "on behalf" in r.json()["msg"]
    r = hostile.client.get("/ga4gh/drs/v1/objects/abc", headers=bob)
    assert r.status_code == 403
    assert len(_denials(hostile, "bob")) == 2


def test_auditor_reads_all_runs_but_cannot_cancel_them(hostile: Harness) -> None:
    run_id = _submit(hostile, hostile.auth("alice", "analyst"))
    auditor = hostile.auth("audrey", "auditor")
    assert hostile.client.get(f"{WES}/runs/{run_id}", headers=auditor).status_code == 200
    r = hostile.client.post(f"{WES}/runs/{run_id}/cancel", headers=auditor)
    assert r.status_code == 403
    body = json.loads(r.text)
    assert "wes:cancel" in body["msg"]
