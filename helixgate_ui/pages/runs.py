"""The analysts' pages: runs list (filters, paging), a run with its task timeline and each
task's verification evidence, logs followed with htmx polling, outputs downloaded through
the UI (streamed from DRS with the user's token, re-hashed on the way), cancel with a
confirmation, and submission of a TRS tool version with DRS inputs picked from readable
datasets and parameters validated before anything reaches WES.

Every call goes to the public APIs with the signed-in user's token (``session.api()``); what
an API refuses is shown as the API said it (403/404/422 pages), never as a 500. View models
live in ``runs_model`` (plain functions, unit-tested).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for

from helixgate.client import ClientError
from helixgate.errors import BadRequest, HelixGateError, NotFound, UpstreamError
from helixgate.integrity import normalize_sha256
from helixgate.sdk import DRS, TRS, WES, HelixGate, object_id_of, sha256_of
from helixgate.wdl_documents import load_wdl
from helixgate_ui import NavItem, session
from helixgate_ui.pages import runs_model as m

blueprint = Blueprint("runs", __name__, url_prefix="/runs")
NAV = [NavItem("Runs", "ui.runs.list_runs", "wes:read"), NavItem("Submit a workflow", "ui.runs.new_run", "wes:submit")]
STOP_POLLING = 286  # htmx: a poll answered with 286 stops polling (the run is finished)
MAX_PICKER_OBJECTS = 500


def _hg() -> HelixGate:
    """The public APIs as the signed-in user (their token, refreshed by the session)."""
    return HelixGate(session.api())


def _permissions() -> frozenset[str]:
    user = session.current_user()
    return user.permissions if user is not None else frozenset()


def _q(value: str) -> str:
    return quote(value, safe="")


_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")


@blueprint.url_value_preprocessor
def _ids(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Run and task ids go into API paths: anything but a plain id (a decoded '?', '#', '..')
    is a page that does not exist, never part of another API request."""
    for key in ("run_id", "task_id"):
        if values and key in values and not _ID.match(str(values[key])):
            raise NotFound(f"no such {key.split('_')[0]}")


@blueprint.errorhandler(HelixGateError)
def _api_refused(exc: HelixGateError) -> Any:
    """An API's refusal, shown with its reason and status (403, 404, 422...), never a 500."""
    if isinstance(exc, ClientError) and exc.status == 401:  # the session ended: sign in again
        return redirect(url_for("ui.auth.login", next=request.full_path.rstrip("?")))
    status = exc.status if 400 <= exc.status < 500 else 502
    titles = {403: "Not allowed", 404: "Not found", 422: "Refused", 502: "Service unavailable"}
    return render_template(
        "runs/error.html", title=titles.get(status, "Request refused"), message=exc.message, status=status
    ), status


# ---------------------------------------------------------------- list
@blueprint.get("/")
@session.login_required
def list_runs() -> str:
    filt, errors = m.RunFilter.from_args(request.args)
    token = str(request.args.get("page_token") or "")[:200]
    answer = _hg().api.get_object(f"{WES}/runs", params=filt.api_params(token))
    return render_template(
        "runs/list.html",
        page=m.run_list(answer),
        filt=filt,
        errors=errors,
        states=m.RUN_STATES,
        page_sizes=m.PAGE_SIZES,
        first_page=bool(token),
        can_submit="wes:submit" in _permissions(),
    )


# ---------------------------------------------------------------- one run
def _run_view(run_id: str) -> m.RunView:
    hg = _hg()
    run_log = hg.run_log(run_id)
    tasks = hg.run_tasks(run_id)
    evidence: list[dict[str, Any]] | None
    try:
        evidence = hg.run_evidence(run_id)
    except ClientError as exc:
        if exc.status not in (403, 404):
            raise
        evidence = None  # an older server without the evidence extension: say so, invent nothing
    return m.run_view(run_log, tasks, evidence, _permissions())


@blueprint.get("/<run_id>")
@session.login_required
def show_run(run_id: str) -> str:
    return render_template("runs/run.html", run=_run_view(run_id))


@blueprint.get("/<run_id>/live")
@session.login_required
def run_live(run_id: str) -> tuple[str, int]:
    """The state, timeline and evidence, re-polled by htmx while the run is not finished."""
    run = _run_view(run_id)
    return render_template("runs/_live.html", run=run), STOP_POLLING if run.terminal else 200


@blueprint.get("/<run_id>/log/<stream>")
@session.login_required
def run_log(run_id: str, stream: str) -> tuple[str, int]:
    """The run's combined stdout/stderr (the tail), re-polled until the run is finished."""
    if stream not in ("stdout", "stderr"):
        raise NotFound("a log is stdout or stderr")
    hg = _hg()
    state = hg.run_status(run_id)
    text, cut = m.tail(hg.run_stream(run_id, stream))
    terminal = state in m.TERMINAL
    return render_template("runs/_log.html", text=text, cut=cut, stream=stream), STOP_POLLING if terminal else 200


@blueprint.get("/<run_id>/tasks/<task_id>/log/<stream>")
@session.login_required
def task_log(run_id: str, task_id: str, stream: str) -> Response:
    if stream not in ("stdout", "stderr"):
        raise NotFound("a log is stdout or stderr")
    text = _hg().run_stream(run_id, stream, task_id=task_id)
    return Response(text, mimetype="text/plain", headers={"Content-Disposition": "inline"})


# ---------------------------------------------------------------- outputs
@blueprint.get("/<run_id>/outputs/<int:index>")
@session.login_required
def download_output(run_id: str, index: int) -> Response:
    """One output File, streamed from DRS with the user's token. The bytes are hashed on the
    way: a stream whose SHA-256 or size differs from the DRS record (or from what the run
    recorded) is cut off before its end, so the browser never saves it as complete."""
    hg = _hg()
    out = m.output_at(hg.run_log(run_id), index)
    if out is None:
        raise NotFound(f"run {run_id} has no output {index}")
    obj = hg.get_object(object_id_of(out.uri))
    expected, size = sha256_of(obj), int(obj.get("size") or 0)
    if out.checksum and normalize_sha256(out.checksum) != expected:
        raise HelixGateError(
            f"output {out.name}: the run recorded sha256 {out.checksum}, DRS holds {expected}", status=422
        )
    method = next((a for a in obj.get("access_methods") or [] if a.get("type") == "https"), None)
    if method is None:
        raise HelixGateError(f"object {obj.get('id')} has no https access method", status=502)
    access = hg.api.get_object(f"{DRS}/objects/{_q(str(obj['id']))}/access/{_q(str(method['access_id']))}")
    # opened here, inside the request: the user's token is read from their session now
    upstream = hg.api.request("GET", str(access.get("url") or ""), stream=True)

    def verified() -> Iterator[bytes]:
        sha, seen = hashlib.sha256(), 0
        try:
            for chunk in upstream.iter_content(1024 * 1024):
                sha.update(chunk)
                seen += len(chunk)
                if seen > size:
                    raise UpstreamError(f"download of {out.uri} is longer than its record")
                yield chunk
        finally:
            upstream.close()
        if seen != size or sha.hexdigest() != expected:  # cut the response short: never complete
            raise UpstreamError(f"download of {out.uri} does not match its checksum")

    return Response(
        verified(),
        mimetype="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{m.safe_filename(out.basename)}"',
            "Content-Length": str(size),
            "X-Checksum-SHA256": expected,
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------- cancel
@blueprint.get("/<run_id>/cancel")
@session.login_required
def confirm_cancel(run_id: str) -> str:
    return render_template("runs/cancel.html", run=_run_view(run_id))


@blueprint.post("/<run_id>/cancel")
@session.login_required
def cancel(run_id: str) -> Any:
    _hg().cancel_run(run_id)  # CSRF and Origin are checked by the shell for every POST
    session.flash(f"Cancellation of run {run_id} requested.", "success")
    return redirect(url_for("ui.runs.show_run", run_id=run_id), code=303)


# ---------------------------------------------------------------- submit
def _tools(hg: HelixGate) -> list[m.ToolChoice]:
    return m.tool_choices(hg.api.get_json(f"{TRS}/tools", params={"limit": 1000}))


def _object_groups(hg: HelixGate) -> list[tuple[str, list[m.ObjectChoice]]]:
    """Readable objects of every readable dataset (DRS ``GET /x-helixgate/datasets`` and
    ``.../objects``); an older DRS without the listing leaves the drs:// field only."""
    try:
        datasets = hg.api.get_object(f"{DRS}/x-helixgate/datasets").get("datasets") or []
    except ClientError as exc:
        if exc.status in (403, 404, 405):
            return []
        raise
    pairs = []
    budget = MAX_PICKER_OBJECTS
    for ds in datasets:
        if budget <= 0 or not isinstance(ds, dict) or not ds.get("id"):
            continue
        page = hg.api.get_object(
            f"{DRS}/x-helixgate/datasets/{_q(str(ds['id']))}/objects", params={"page_size": min(budget, 200)}
        )
        objects = [o for o in page.get("objects") or [] if isinstance(o, dict)]
        budget -= len(objects)
        pairs.append((ds, objects))
    return m.object_choices(pairs)


def _descriptor(hg: HelixGate, tool_id: str, version_id: str) -> str:
    answer = hg.api.get_object(f"{TRS}/tools/{_q(tool_id)}/versions/{_q(version_id)}/CWL/descriptor")
    return str(answer.get("content") or "")


def _wdl_document(hg: HelixGate, tool_id: str, version_id: str) -> Any:
    """Every WDL file of the version, read from TRS with the user's token, loaded by the
    restricted loader (imports only among these files; nothing on disk or the network)."""
    base = f"{TRS}/tools/{_q(tool_id)}/versions/{_q(version_id)}/WDL"
    main, paths = m.wdl_files(hg.api.get_json(f"{base}/files"))
    files: dict[str, bytes] = {}
    total = 0
    for path in paths:
        answer = hg.api.get_object(f"{base}/descriptor/{quote(path, safe='/')}")
        files[path] = str(answer.get("content") or "").encode("utf-8")
        total += len(files[path])
        if total > m.MAX_DESCRIPTOR_BYTES:
            raise BadRequest("the version's WDL files are too large to build a form from")
    return load_wdl(files, main)


def _split_pick(tool_id: str, version_id: str, language: str) -> tuple[str, str, str]:
    """The picker sends ``tool:version:LANGUAGE`` in one field (``tool:version`` from older links)."""
    if not version_id and ":" in tool_id:
        head, _, last = tool_id.rpartition(":")
        if last in m.LANGUAGES and ":" in head:
            tool_id, language = head, last
        tool_id, _, version_id = tool_id.rpartition(":")
    return tool_id, version_id, language


def _form_context(hg: HelixGate, tool_id: str, version_id: str, language: str) -> dict[str, Any]:
    tools = _tools(hg)
    ctx: dict[str, Any] = {
        "tools": tools,
        "tool_id": tool_id,
        "version_id": version_id,
        "language": language,
        "specs": [],
        "groups": [],
        "wdl": None,
        "type_version": "",
    }
    if tool_id and version_id:
        tool = next((t for t in tools if t.tool_id == tool_id), None)
        offered = [v for v in (tool.versions if tool else []) if v[0] == version_id]
        if language not in m.LANGUAGES:  # not said: the version's first language
            language = offered[0][3] if offered else "CWL"
        ctx["language"] = language
        if language == "WDL":
            ctx["wdl"] = _wdl_document(hg, tool_id, version_id)
            ctx["specs"] = m.wdl_inputs(ctx["wdl"])
            ctx["type_version"] = m.wdl_type_version(ctx["wdl"])
        else:
            ctx["specs"] = m.workflow_inputs(_descriptor(hg, tool_id, version_id))
        ctx["groups"] = _object_groups(hg)
        ctx["signed"] = any(v[2] for v in offered)
    return ctx


@blueprint.get("/new")
@session.login_required
def new_run() -> str:
    if "wes:submit" not in _permissions():
        raise HelixGateError("submitting runs needs the analyst role", status=403)
    tool_id, version_id, language = _split_pick(
        str(request.args.get("tool_id") or "")[:200],
        str(request.args.get("version_id") or "")[:200],
        str(request.args.get("language") or "").upper()[:10],
    )
    ctx = _form_context(_hg(), tool_id, version_id, language)
    return render_template("runs/new.html", values={}, errors={}, tags="", **ctx)


@blueprint.post("/new")
@session.login_required
def submit_run() -> Any:
    hg = _hg()
    tool_id = str(request.form.get("tool_id") or "")[:200]
    version_id = str(request.form.get("version_id") or "")[:200]
    language = str(request.form.get("language") or "").upper()[:10]
    if not tool_id or not version_id:
        raise BadRequest("choose a tool version first")
    ctx = _form_context(hg, tool_id, version_id, language)
    specs: list[m.InputSpec] = ctx["specs"]
    values = m.form_values(specs, request.form)
    params, errors = m.validate_params(specs, values)
    tags_text = str(request.form.get("tags") or "")[:2000]
    tags, tag_error = m.parse_tags(tags_text)
    if tag_error:
        errors["tags"] = tag_error
    if ctx["wdl"] is not None and not any(s.name in errors for s in specs):
        errors.update(m.check_wdl_params(ctx["wdl"], specs, params))  # miniwdl's types, drs:// Files only
    for name, uri in m.file_params(specs, params):
        if name not in errors:
            try:  # readable by this user? (WES checks again at submission)
                hg.get_object(object_id_of(uri))
            except ClientError as exc:
                errors[name] = f"cannot read {uri}: {exc.message}"
            except BadRequest as exc:
                errors[name] = exc.message
    if errors:
        return render_template("runs/new.html", values=values, errors=errors, tags=tags_text, **ctx), 400
    host = urlsplit(hg.api.base_url).netloc  # the registry the UI reads tools from
    url = f"trs://{host}/{tool_id}/{version_id}"
    try:
        if ctx["wdl"] is not None:
            run_id = hg.submit_run(
                url, params, tags=tags, workflow_type="WDL", workflow_type_version=ctx["type_version"]
            )
        else:
            run_id = hg.submit_run(url, params, tags=tags)
    except ClientError as exc:
        if exc.status >= 500:
            raise
        session.flash(f"WES refused the run: {exc.message}", "error")
        return render_template("runs/new.html", values=values, errors={}, tags=tags_text, **ctx), exc.status
    session.flash(f"Run {run_id} submitted.", "success")
    return redirect(url_for("ui.runs.show_run", run_id=run_id), code=303)


@blueprint.app_context_processor
def _landing() -> dict[str, Any]:
    """``analyst_landing()`` for the landing page (``index.html``): the user's actions and,
    when they may read runs, their five latest runs (None when they may not)."""

    def analyst_landing() -> dict[str, Any]:
        user = session.current_user()
        permissions = user.permissions if user is not None else frozenset()
        recent = None
        if "wes:read" in permissions:
            try:
                recent = m.run_list(_hg().api.get_object(f"{WES}/runs", params={"page_size": 5}))
            except ClientError:
                recent = None  # a courtesy summary: the runs page shows the API's own answer
        return {"actions": m.landing_actions(permissions, url_for), "recent": recent}

    return {"analyst_landing": analyst_landing}
