"""WES 1.1.0 handlers (thin: parse, authorize, call WorkflowService, render with wes_server.shapes)."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from helixgate.errors import BadRequest
from helixgate.web import audit_change, caller, platform, set_target
from wes_server import shapes
from wes_server.declaration import SERVICE
from wes_server.domain import Viewer, WorkflowService
from wes_server.submission import parse_run_request


def _svc() -> WorkflowService:
    return platform().domain(WorkflowService)


def _viewer() -> Viewer:
    c = caller()
    return Viewer(c.username, c.can("wes:read-all"))


def _base_url() -> str:
    return platform().settings.effective_public_url + SERVICE.base_path


def get_service_info() -> dict[str, Any]:
    return shapes.service_info(platform().settings, _svc().service_facts())


def list_runs(
    page_size: int | None = None, page_token: str | None = None, state: str | None = None, tag: list[str] | None = None
) -> dict[str, Any]:
    tags: dict[str, str] = {}
    for t in tag or []:
        key, sep, value = t.partition(":")
        if not sep or not key:
            raise BadRequest(f"tag filter must be key:value, got {t[:80]!r}")
        tags[key] = value
    return shapes.run_list(_svc().list_runs(_viewer(), page_size, page_token, state, tags))


def run_workflow(*_args: Any, **_kwargs: Any) -> tuple[dict[str, Any], int]:
    ctype = request.content_type or ""
    if not ctype.startswith("multipart/form-data"):
        raise BadRequest("POST /runs needs a multipart/form-data body (see the WES RunRequest)")
    try:
        form = {k: request.form.get(k, "") for k in request.form}
        files = [(f.filename or "", f.read()) for f in request.files.getlist("workflow_attachment")]
    except ValueError as exc:  # werkzeug: malformed multipart
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if any(not name for name, _ in files):
        raise BadRequest("every workflow_attachment part needs a Content-Disposition filename")
    req = parse_run_request(form, files, max_attachment_bytes=platform().settings.max_attachment_bytes)
    run_id = _svc().submit(caller().username or "", req)
    set_target(run_id)
    audit_change("wes.run.create", run_id, details={"workflow_url": form.get("workflow_url", "")[:300]})
    return shapes.run_id(run_id), 200


def get_run_log(run_id: str) -> dict[str, Any]:
    set_target(run_id)
    return shapes.run_log(_svc().get_run(_viewer(), run_id), _base_url())


def get_run_status(run_id: str) -> dict[str, Any]:
    set_target(run_id)
    return shapes.run_status(_svc().get_run(_viewer(), run_id))


def list_tasks(run_id: str, page_size: int | None = None, page_token: str | None = None) -> dict[str, Any]:
    set_target(run_id)
    rows, token = _svc().list_tasks(_viewer(), run_id, page_size, page_token)
    return shapes.task_list(rows, token, _base_url())


def get_task(run_id: str, task_id: str) -> dict[str, Any]:
    set_target(run_id)
    return shapes.task_log(_svc().get_task(_viewer(), run_id, task_id), _base_url())


def get_run_evidence(run_id: str) -> dict[str, Any]:
    set_target(run_id)
    return shapes.run_evidence(run_id, _svc().run_evidence(_viewer(), run_id))


def cancel_run(run_id: str) -> dict[str, Any]:
    set_target(run_id)
    c = caller()
    state = _svc().cancel(Viewer(c.username, False), run_id)
    audit_change("wes.run.cancel", run_id, details={"state": state})
    return shapes.run_id(run_id)


def get_run_stream(run_id: str, stream: str) -> Response:
    set_target(run_id)
    return Response(_svc().run_output(_viewer(), run_id, stream), mimetype="text/plain")


def get_task_stream(run_id: str, task_id: str, stream: str) -> Response:
    set_target(run_id)
    return Response(_svc().task_output(_viewer(), run_id, task_id, stream), mimetype="text/plain")
