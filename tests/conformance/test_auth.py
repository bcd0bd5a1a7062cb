"""Missing, expired and forged tokens on every GA4GH operation of the running services: the
answer is the service's error shape (validated against the official spec), never a 5xx and
never data the caller may not see."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conformance.seed import Seeded
from tests.fixtures.ga4gh_schemas import ValidatingClient, operations
from tests.fixtures.live import LiveServer

pytestmark = pytest.mark.integration


def _concrete(template: str, seeded: Seeded) -> str:
    values = {
        "run_id": seeded.run_id, "task_id": "t1", "id": seeded.tool_id, "version_id": seeded.version_id,
        "type": "CWL", "relative_path": "echo.cwl", "object_id": seeded.object_id, "access_id": "https",
    }
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def _calls(seeded: Seeded) -> list[tuple[str, str, str, bool]]:
    """(service, METHOD, url path, public) for every official operation."""
    out = []
    for service, base in (("wes", "/ga4gh/wes/v1"), ("trs", "/ga4gh/trs/v2"), ("drs", "/ga4gh/drs/v1")):
        for _, op in operations(service, "official"):
            # service-info, and DRS OPTIONS (security: [{}]: it tells clients which auth to use)
            public = op.template == "/service-info" or op.spec.get("security") == [{}]
            out.append((service, op.method.upper(), base + _concrete(op.template, seeded), public))
    return out


@pytest.fixture(scope="module")
def expired_token(conformance_live: LiveServer, seeded: Seeded) -> str:
    token = conformance_live.cli("token", "issue", "--user", "analyst", "--ttl", "1s", check=True).stdout.strip()
    time.sleep(2.1)  # the conformance server runs with clock_skew=0
    return token


def _body_for(method: str, path: str, seeded: Seeded) -> dict[str, object]:
    if method in ("POST", "OPTIONS") and path.endswith("/objects"):
        return {"json": {"bulk_object_ids": [seeded.object_id]}}
    if method == "POST" and path.endswith("/objects/access"):
        ids = [{"bulk_object_id": seeded.object_id, "bulk_access_ids": ["https"]}]
        return {"json": {"bulk_object_access_ids": ids}}
    if method in ("POST", "OPTIONS") and "/drs/" in path:
        return {"json": {}}
    if method == "POST" and path.endswith("/runs"):
        return {"files": [("workflow_type", (None, "CWL"))]}
    return {}


def test_missing_token(seeded: Seeded) -> None:
    client = ValidatingClient(requests.Session(), base_url=seeded.url)
    for service, method, path, public in _calls(seeded):
        r = client.request(method, path, timeout=30, **_body_for(method, path, seeded))  # type: ignore[arg-type]
        if public:
            assert r.status_code in (200, 204), f"{method} {path}: {r.status_code}"
        elif service == "wes":
            assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text[:200]}"
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
        elif service == "trs":
            # anonymous_read (default on): the TRS read API is open, as on most public registries
            assert r.status_code in (200, 404), f"{method} {path}: {r.status_code}"
        else:
            # DRS: the seeded object is private, so an anonymous caller learns nothing about it
            # (bulk operations answer 200 and list the object as unresolved, per DRS 1.4+)
            bulk_refusal = r.status_code == 200 and r.json().get("summary", {}).get("resolved") == 0
            assert r.status_code in (401, 403, 404) or bulk_refusal, f"{method} {path}: {r.status_code} {r.text[:200]}"
            assert seeded.object_sha256 not in r.text


@pytest.mark.parametrize("kind", ["expired", "forged", "malformed"])
def test_invalid_token_is_refused_everywhere(seeded: Seeded, expired_token: str, kind: str) -> None:
    header, payload, _sig = expired_token.split(".")
    token = {
        "expired": expired_token,
        "forged": f"{header}.{payload}.{'A' * 86}",
        "malformed": "not-a-jwt",
    }[kind]
    client = ValidatingClient(requests.Session(), base_url=seeded.url)
    for _service, method, path, public in _calls(seeded):
        if public:
            continue  # service-info answers everyone
        r = client.request(method, path, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                           **_body_for(method, path, seeded))  # type: ignore[arg-type]
        assert r.status_code == 401, f"{kind} token: {method} {path} -> {r.status_code} {r.text[:200]}"
        assert token not in r.text


def test_valid_token_of_a_user_without_the_role_is_forbidden(seeded: Seeded) -> None:
    client = ValidatingClient(requests.Session(), base_url=seeded.url)
    r = client.post("/ga4gh/wes/v1/runs", headers=seeded.headers("viewer"), files=[("workflow_type", (None, "CWL"))])
    assert r.status_code == 403, r.text
