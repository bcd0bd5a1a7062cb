"""Every GA4GH operation of the three services, called with seeded data, answers a response
that validates against the OFFICIAL spec (operation, status, content type and body)."""

from __future__ import annotations

import pytest
import requests

from tests.conformance.seed import UPPER_STEP, WORKFLOW, Seeded
from tests.fixtures.ga4gh_schemas import ValidatingClient, operations

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(seeded: Seeded) -> ValidatingClient:
    return ValidatingClient(requests.Session(), base_url=seeded.url)


def _official_operations(service: str) -> set[tuple[str, str]]:
    return {(op.method.upper(), op.template) for _, op in operations(service, "official")}


def _covered(client: ValidatingClient, ok_only: bool = True) -> set[tuple[str, str]]:
    return {(m, t) for m, t, status, source in client.checked if source == "official" and (status < 300 or not ok_only)}


def test_trs_operations_validate(client: ValidatingClient, seeded: Seeded) -> None:
    base = f"/ga4gh/trs/v2/tools/{seeded.tool_id}/versions/{seeded.version_id}"
    h = seeded.headers("viewer")
    expect = [
        ("/ga4gh/trs/v2/service-info", 200),
        ("/ga4gh/trs/v2/toolClasses", 200),
        ("/ga4gh/trs/v2/tools", 200),
        ("/ga4gh/trs/v2/tools?limit=1&offset=0&toolClass=CommandLineTool", 200),
        (f"/ga4gh/trs/v2/tools/{seeded.tool_id}", 200),
        (f"/ga4gh/trs/v2/tools/{seeded.tool_id}/versions", 200),
        (base, 200),
        (f"{base}/CWL/descriptor", 200),
        (f"{base}/PLAIN_CWL/descriptor", 200),
        (f"{base}/CWL/descriptor/echo.cwl", 200),
        (f"{base}/CWL/descriptor/tests/echo.json", 200),  # nested relative path (format: path fix)
        (f"{base}/CWL/tests", 200),
        (f"{base}/CWL/files", 200),
        (f"{base}/CWL/files?format=zip", 200),
        (f"{base}/containerfile", 404),  # published without a Containerfile
        ("/ga4gh/trs/v2/tools/no.such.tool", 404),
        (f"/ga4gh/trs/v2/tools/{seeded.tool_id}/versions/9.9.9", 404),
    ]
    for path, status in expect:
        r = client.get(path, headers=h)
        assert r.status_code == status, f"GET {path}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json")
    assert _official_operations("trs") <= _covered(client, ok_only=False)


def test_drs_operations_validate(client: ValidatingClient, seeded: Seeded) -> None:
    h = seeded.headers("steward")
    oid = seeded.object_id
    assert client.get("/ga4gh/drs/v1/service-info").status_code == 200
    obj = client.get(f"/ga4gh/drs/v1/objects/{oid}", headers=h)
    assert obj.status_code == 200, obj.text
    assert {"type": "sha-256", "checksum": seeded.object_sha256} in obj.json()["checksums"]
    access_id = obj.json()["access_methods"][0]["access_id"]
    assert client.get(f"/ga4gh/drs/v1/objects/{oid}?expand=true", headers=h).status_code == 200
    assert client.options(f"/ga4gh/drs/v1/objects/{oid}", headers=h).status_code in (200, 204)
    bulk_options = client.options("/ga4gh/drs/v1/objects", headers=h, json={"bulk_object_ids": [oid]})
    assert bulk_options.status_code in (200, 204), bulk_options.text
    assert client.post(f"/ga4gh/drs/v1/objects/{oid}", headers=h, json={"expand": False}).status_code == 200
    bulk = client.post("/ga4gh/drs/v1/objects", headers=h, json={"bulk_object_ids": [oid]})
    assert bulk.status_code == 200, bulk.text
    url = client.get(f"/ga4gh/drs/v1/objects/{oid}/access/{access_id}", headers=h)
    assert url.status_code == 200, url.text
    assert client.post(f"/ga4gh/drs/v1/objects/{oid}/access/{access_id}", headers=h, json={}).status_code == 200
    accesses = client.post(
        "/ga4gh/drs/v1/objects/access",
        headers=h,
        json={"bulk_object_access_ids": [{"bulk_object_id": oid, "bulk_access_ids": [access_id]}]},
    )
    assert accesses.status_code == 200, accesses.text
    # the URL really serves the object's bytes
    fetched = requests.get(url.json()["url"], headers=url.json().get("headers") and {
        k: v for k, v in (h.split(": ", 1) for h in url.json()["headers"])
    }, timeout=30)
    assert fetched.status_code == 200
    assert client.get("/ga4gh/drs/v1/objects/0123456789abcdef0123456789abcdef", headers=h).status_code == 404
    assert client.get(f"/ga4gh/drs/v1/objects/{oid}/access/nope", headers=h).status_code == 404
    assert client.get(f"/ga4gh/drs/v1/objects/{oid}", headers=seeded.headers("viewer")).status_code in (403, 404)
    assert _official_operations("drs") <= _covered(client)


def test_wes_operations_validate(client: ValidatingClient, seeded: Seeded) -> None:
    h = seeded.headers("analyst")
    rid = seeded.run_id
    assert seeded.run_state == "COMPLETE"
    assert client.get("/ga4gh/wes/v1/service-info").status_code == 200
    assert client.get("/ga4gh/wes/v1/runs", headers=h).status_code == 200
    assert client.get("/ga4gh/wes/v1/runs?page_size=1", headers=h).status_code == 200
    log = client.get(f"/ga4gh/wes/v1/runs/{rid}", headers=h)
    assert log.status_code == 200 and log.json()["outputs"] == {"shout": "HELLO"}, log.text
    assert client.get(f"/ga4gh/wes/v1/runs/{rid}/status", headers=h).json()["state"] == "COMPLETE"
    assert client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks", headers=h).status_code == 200
    assert client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks/no-such-task", headers=h).status_code == 404
    # the evidence extension validates against its HelixGate schema (openapi/extensions/wes.yaml)
    evidence = client.get(f"/ga4gh/wes/v1/x-helixgate/runs/{rid}/evidence", headers=h)
    assert evidence.status_code == 200, evidence.text
    listed = client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks", headers=h).json()["task_logs"]
    assert [t["task_id"] for t in evidence.json()["tasks"]] == [t["id"] for t in listed]
    submitted = client.post(
        "/ga4gh/wes/v1/runs",
        headers=h,
        files=[("workflow_attachment", ("main.cwl", WORKFLOW)), ("workflow_attachment", ("upper.cwl", UPPER_STEP))],
        data={"workflow_type": "CWL", "workflow_type_version": "v1.2", "workflow_url": "main.cwl",
              "workflow_params": '{"message": "x"}'},
    )
    assert submitted.status_code == 200, submitted.text
    cancel = client.post(f"/ga4gh/wes/v1/runs/{submitted.json()['run_id']}/cancel", headers=h)
    assert cancel.status_code in (200, 409), cancel.text  # 409 if it already finished
    assert client.get("/ga4gh/wes/v1/runs/no-such-run", headers=h).status_code == 404
    # other users never see the analyst's run
    assert client.get(f"/ga4gh/wes/v1/runs/{rid}", headers=seeded.headers("viewer")).status_code in (403, 404)
    # a malformed submission is refused with the WES error shape, never a 5xx
    bad = client.post("/ga4gh/wes/v1/runs", headers=h, files=[("workflow_type", (None, "CWL"))])
    assert bad.status_code == 400, bad.text
    not_multipart = client.post("/ga4gh/wes/v1/runs", headers=h, data={"workflow_type": "CWL"})
    assert not_multipart.status_code == 415, not_multipart.text
    assert _official_operations("wes") <= _covered(client, ok_only=False)


def test_wes_operations_validate_with_wdl_runs_present(
    client: ValidatingClient, seeded: Seeded, seeded_wdl_run: tuple[str, str]
) -> None:
    """Service-info lists WDL; a WDL run's log, status, tasks and the run list (CWL and WDL runs
    together) validate against the official WES schema."""
    h = seeded.headers("analyst")
    rid, state = seeded_wdl_run
    assert state == "COMPLETE"
    info = client.get("/ga4gh/wes/v1/service-info").json()
    assert info["workflow_type_versions"]["WDL"]["workflow_type_version"] == ["1.0", "1.1"]
    assert set(info["workflow_engine_versions"]) == {"cwltool", "miniwdl"}
    listed = client.get("/ga4gh/wes/v1/runs", headers=h).json()["runs"]
    assert {seeded.run_id, rid} <= {r["run_id"] for r in listed}
    log = client.get(f"/ga4gh/wes/v1/runs/{rid}", headers=h)
    assert log.status_code == 200, log.text
    body = log.json()
    assert body["request"]["workflow_type"] == "WDL" and body["request"]["workflow_type_version"] == "1.1"
    said = body["outputs"]["shout.said"]
    assert len(said) == 2 and all(f["location"].startswith("drs://") and f["checksum"] for f in said), said
    assert client.get(f"/ga4gh/wes/v1/runs/{rid}/status", headers=h).json()["state"] == "COMPLETE"
    tasks = client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks", headers=h).json()["task_logs"]
    assert len(tasks) == 2 and all(t["exit_code"] == 0 for t in tasks), tasks
    one = client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks/{tasks[0]['id']}", headers=h)
    assert one.status_code == 200 and one.json()["system_logs"], one.text
    paged = client.get(f"/ga4gh/wes/v1/runs/{rid}/tasks?page_size=1", headers=h).json()
    assert len(paged["task_logs"]) == 1 and paged["next_page_token"]
    # a bad WDL submission is refused in the WES error shape
    bad = client.post(
        "/ga4gh/wes/v1/runs",
        headers=h,
        files=[("workflow_attachment", ("main.wdl", 'version 1.0\nimport "/etc/x.wdl"\nworkflow w {}\n'))],
        data={"workflow_type": "WDL", "workflow_type_version": "1.0", "workflow_url": "main.wdl"},
    )
    assert bad.status_code == 400 and "absolute path" in bad.json()["msg"], bad.text
