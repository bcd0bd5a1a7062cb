"""Deviations from the GA4GH specs found by the conformance run, one precise test each.

Each is also caught by the schemathesis run; these name the request so the fix is obvious
(see docs/compatibility.md, "Open deviations")."""

from __future__ import annotations

import pytest
import requests

from tests.conformance.seed import Seeded
from tests.fixtures.ga4gh_schemas import ValidatingClient

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(seeded: Seeded) -> ValidatingClient:
    return ValidatingClient(requests.Session(), base_url=seeded.url)


def test_run_workflow_without_body_is_a_400(client: ValidatingClient, seeded: Seeded) -> None:
    # connexion's multipart validation reads headers["Content-Type"]: KeyError -> 500 today
    r = client.post("/ga4gh/wes/v1/runs", headers=seeded.headers("analyst"))
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "path", ["/ga4gh/drs/v1/objects/{oid}", "/ga4gh/drs/v1/objects", "/ga4gh/drs/v1/objects/access"]
)
def test_drs_json_body_that_is_not_utf8_is_a_400(client: ValidatingClient, seeded: Seeded, path: str) -> None:
    # connexion decodes the JSON body before validation: UnicodeDecodeError -> 500 today
    r = client.post(
        path.format(oid=seeded.object_id),
        headers={**seeded.headers("steward"), "Content-Type": "application/json"},
        data=b"\xff\x07",
    )
    assert r.status_code == 400, r.text


def test_cancel_of_a_finished_run_answers_a_declared_status(client: ValidatingClient, seeded: Seeded) -> None:
    # WES CancelRun declares 200/401/403/404/500 only; cancelling a finished run is a no-op
    assert seeded.run_state == "COMPLETE"
    r = client.post(f"/ga4gh/wes/v1/runs/{seeded.run_id}/cancel", headers=seeded.headers("analyst"))
    assert r.status_code == 200, r.text
    assert r.json() == {"run_id": seeded.run_id}
    status = client.get(f"/ga4gh/wes/v1/runs/{seeded.run_id}/status", headers=seeded.headers("analyst"))
    assert status.json()["state"] == "COMPLETE"
