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


# --------------------------------------------------------------------------- the core API
async def core_me(request: Request) -> JSONResponse:
    body = {"username": "alice", "roles": ["viewer"], "permissions": ["trs:read"]}
    if "extra" in request.query_params:
        body["password_hash"] = "x"  # a field core.yaml's User does not allow
    return JSONResponse(body)


async def core_user(request: Request) -> JSONResponse:
    status = int(request.query_params.get("status", "404"))
    shape = request.query_params.get("shape", "core")
    body = {"msg": "user not found", "status_code": status} if shape == "core" else {"code": status, "message": "x"}
    return JSONResponse(body, status_code=status)


CORE_APP = Starlette(
    routes=[Route("/helixgate/v1/me", core_me), Route("/helixgate/v1/users/{username}", core_user,
                                                      methods=["GET", "DELETE"])]
)


def test_a_core_response_matching_core_yaml_passes() -> None:
    with ValidatingTestClient(CORE_APP) as client:
        assert client.get("/helixgate/v1/me").json()["username"] == "alice"
        assert client.get("/helixgate/v1/users/bob").status_code == 404  # declared, {msg, status_code}


def test_a_core_body_outside_core_yaml_fails() -> None:
    with ValidatingTestClient(CORE_APP) as client, pytest.raises(SchemaMismatch, match="(?s)GetMe.*password_hash"):
        client.get("/helixgate/v1/me?extra=1")


def test_a_core_error_must_have_the_core_error_shape() -> None:
    with ValidatingTestClient(CORE_APP) as client, pytest.raises(SchemaMismatch, match="GetUser"):
        client.get("/helixgate/v1/users/bob?shape=trs")


def test_a_core_status_its_document_does_not_declare_fails() -> None:
    # 409 is tolerated for GA4GH operations (their documents are not ours); core.yaml must declare it
    with ValidatingTestClient(CORE_APP) as client, pytest.raises(SchemaMismatch, match="status 409 is not declared"):
        client.get("/helixgate/v1/users/bob?status=409")
    with ValidatingTestClient(CORE_APP) as client:  # the web layer's 401 before any handler may be left out
        assert client.get("/helixgate/v1/users/bob?status=401").status_code == 401
