"""The harness client fails a test on a GA4GH response that does not match its OpenAPI operation."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fixtures.app import ValidatingTestClient
from tests.fixtures.ga4gh_schemas import SchemaMismatch

RUN_ID = "0" * 32


async def run_status(request: Request) -> JSONResponse:
    state = request.query_params.get("state", "RUNNING")
    return JSONResponse({"run_id": request.path_params["run_id"], "state": state})


async def anything(request: Request) -> JSONResponse:
    status = int(request.query_params.get("status", "200"))
    body = {"msg": "nope", "status_code": status} if status >= 400 else {"hello": "world"}
    return JSONResponse(body, status_code=status)


APP = Starlette(
    routes=[
        Route("/ga4gh/wes/v1/runs/{run_id}/status", run_status),
        Route("/ga4gh/wes/v1/{rest:path}", anything),
    ]
)


def test_a_matching_response_passes() -> None:
    with ValidatingTestClient(APP) as client:
        assert client.get(f"/ga4gh/wes/v1/runs/{RUN_ID}/status").json()["state"] == "RUNNING"


def test_a_body_outside_the_schema_fails() -> None:
    with ValidatingTestClient(APP) as client, pytest.raises(SchemaMismatch, match="GetRunStatus"):
        client.get(f"/ga4gh/wes/v1/runs/{RUN_ID}/status?state=HALF_DONE")


def test_an_undeclared_status_fails() -> None:
    with ValidatingTestClient(APP) as client, pytest.raises(SchemaMismatch, match="status 418 is not declared"):
        client.get("/ga4gh/wes/v1/service-info?status=418")


def test_a_route_no_operation_declares_must_be_a_404_in_the_error_shape() -> None:
    with ValidatingTestClient(APP) as client:
        assert client.get("/ga4gh/wes/v1/no/such/thing?status=404").status_code == 404
        with pytest.raises(SchemaMismatch, match="must answer 404 or 405"):
            client.get("/ga4gh/wes/v1/no/such/thing")
