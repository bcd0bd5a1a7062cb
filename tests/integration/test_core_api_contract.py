"""Every operation of the HelixGate core API (openapi/core.yaml), called through the harness,
answers a response that validates against core.yaml (operation, status, content type, body),
on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.ga4gh_schemas import ValidatingClient, operations

CORE = "/helixgate/v1"


@pytest.fixture()
def harness(harness_factory: Any) -> Any:
    return harness_factory(services=("core",))


def test_every_core_operation_answers_per_core_yaml(harness: Any) -> None:
    client = ValidatingClient(harness.client)
    admin = harness.auth("root", "admin")
    auditor = harness.auth("audrey", "auditor")

    assert client.get(f"{CORE}/service-info").status_code == 200
    assert client.get(f"{CORE}/me", headers=admin).json()["username"] == "root"
    assert client.get(f"{CORE}/users", headers=admin).status_code == 200
    created = client.post(f"{CORE}/users", headers=admin, json={"username": "bob", "roles": ["viewer"]})
    assert created.status_code == 201
    # the zone of created_at survives the database (SQLite drops it)
    assert created.json()["created_at"].endswith("+00:00")
    assert client.get(f"{CORE}/users/bob", headers=admin).json()["roles"] == ["viewer"]
    assert client.patch(f"{CORE}/users/bob", headers=admin, json={"active": True}).json()["active"] is True
    token = client.post(f"{CORE}/tokens", headers=admin, json={"username": "root", "ttl": "5m"})
    assert token.status_code == 201 and token.json()["expires_in"] == 300
    assert client.delete(f"{CORE}/users/bob", headers=admin).status_code == 204
    events = client.get(f"{CORE}/audit/events?page_size=5", headers=auditor).json()
    assert events["events"] and all(len(e["hash"]) == 64 for e in events["events"])
    assert client.get(f"{CORE}/audit/verify", headers=auditor).json()["ok"] is True
    assert client.get(f"{CORE}/audit/cef", headers=auditor).status_code == 200

    # the handlers' own errors, each declared by its operation, in the core's {msg, status_code}
    assert client.get(f"{CORE}/users/bob", headers=admin).status_code == 404
    assert client.delete(f"{CORE}/users/bob", headers=admin).status_code == 404
    assert client.post(f"{CORE}/users", headers=admin, json={"username": "root"}).status_code == 409
    assert client.post(f"{CORE}/users", headers=admin, json={"username": "x", "roles": ["service"]}).status_code == 403
    assert client.post(f"{CORE}/tokens", headers=admin, json={"username": "audrey"}).status_code == 403

    declared = {(op.method.upper(), op.template) for _, op in operations("core")}
    covered = {(method, template) for method, template, status, _ in client.checked if status < 300}
    assert covered == declared
