"""Tool developers' pages: tools, versions with their pins, checksums, signer and verification
status (re-verified here), image drift checks, creating a tool and publishing a version.

Every call goes to the public TRS API with the signed-in user's token (``helixgate_ui.session.api``);
an action is offered only when the API would allow it, and the API still decides.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from helixgate.errors import BadRequest, HelixGateError
from helixgate.sdk import TRS, check_recorded_checksums
from helixgate_ui import NavItem
from helixgate_ui.pages import catalog_common as common
from helixgate_ui.pages.tools_view import (
    DESCRIPTOR_TYPES,
    image_statuses,
    parse_publish,
    tool_page,
    tool_rows,
    trust_view,
    verify_here,
    version_page,
)

blueprint = Blueprint("tools", __name__, url_prefix="/tools")
NAV = [NavItem("Tools", "ui.tools.index", "trs:read")]
PAGE = 25


@blueprint.get("/")
@common.login_required
def index() -> str:
    hg, me = common.client("trs"), common.me()
    offset = common.int_arg("offset", 0, 0, 1_000_000)
    params: dict[str, Any] = {"limit": PAGE, "offset": offset}
    name = request.args.get("name", "").strip()[:128]
    if name:
        params["toolname"] = name
    resp = hg.api.request("GET", f"{TRS}/tools", params=params)
    try:
        body = resp.json()
    except ValueError:  # not JSON: show no tools rather than fail the page
        body = None
    tools = tool_rows(body if isinstance(body, list) else [])
    return render_template(
        "tools/index.html",
        tools=tools,
        name=name,
        offset=offset,
        prev_offset=max(0, offset - PAGE) if offset else None,
        next_offset=offset + PAGE if "next_page" in resp.headers else None,
        may_create="trs:publish" in me.get("permissions", []),
    )


@blueprint.get("/_trust")  # "_" keeps it apart from tool ids (helixgate tool ids never start with one)
@common.login_required
def trust() -> str:
    """The registry's published trust material: what every version's signature is checked against."""
    return render_template("tools/trust.html", trust=trust_view(common.client("trs").trust_material()))


@blueprint.route("/_new", methods=["GET", "POST"])
@common.login_required
def create() -> str | Response | tuple[str, int]:
    me = common.me()
    if "trs:publish" not in me.get("permissions", []):
        common.refuse("creating tools needs the tool-developer role")
    error, status, form = "", 400, request.form
    if request.method == "POST":
        try:
            if not form.get("organization", "").strip() or not form.get("name", "").strip():
                raise BadRequest("organization and name are required")
            tool = common.client("trs").create_tool(
                form["organization"].strip(),
                form["name"].strip(),
                tool_id=form.get("tool_id", "").strip() or None,
                description=form.get("description", "").strip(),
            )
            common.flash_ok(f"created tool {tool.get('id')}")
            return redirect(url_for("ui.tools.tool", tool_id=str(tool.get("id"))), 303)
        except HelixGateError as exc:
            error, status = common.message(exc), common.status_of(exc)
    return common.render_form("tools/new.html", error, status, form=form)


@blueprint.get("/<tool_id>")
@common.login_required
def tool(tool_id: str) -> str:
    record = common.client("trs").get_tool(tool_id)
    return render_template("tools/tool.html", tool=tool_page(record, common.me()))


@blueprint.get("/<tool_id>/versions/<version_id>")
@common.login_required
def version(tool_id: str, version_id: str) -> str:
    hg = common.client("trs")
    record = hg.version_record(tool_id, version_id, content=True)
    verification = verify_here(record, lambda: hg.version_bundle(tool_id, version_id), lambda: hg.trust_material())
    run_link = common.can("wes:submit") and verification.ok and common.has_page("ui.runs.new_run")
    return render_template("tools/version.html", v=version_page(record, verification), run_link=run_link)


@blueprint.get("/<tool_id>/versions/<version_id>/images")
@common.login_required
def images(tool_id: str, version_id: str) -> str:
    """The image drift check (htmx fragment; a full page without htmx)."""
    t, v = common.quoted(tool_id), common.quoted(version_id)
    fragment = bool(request.headers.get("HX-Request"))
    try:
        report = common.client("trs").api.get_object(f"{TRS}/x-helixgate/tools/{t}/versions/{v}/image-status")
    except HelixGateError as exc:
        if not fragment:
            raise
        return common.fragment_error(f"the image check failed: {exc.message}")  # htmx swaps only 2xx answers
    template = "tools/_images.html" if fragment else "tools/images.html"
    return render_template(
        template,
        tool_id=tool_id,
        version_id=version_id,
        checked_at=report.get("checked_at", ""),
        statuses=image_statuses(report),
    )


@blueprint.route("/<tool_id>/publish", methods=["GET", "POST"])
@common.login_required
def publish(tool_id: str) -> str | Response | tuple[str, int]:
    hg = common.client("trs")
    page = tool_page(hg.get_tool(tool_id), common.me())
    if not page.can_publish:
        common.refuse(f"only the owner of {tool_id} ({page.owner or 'unknown'}) may publish its versions")
    error, status, form = "", 400, request.form
    if request.method == "POST":
        try:
            primary = request.files.get("primary")
            req = parse_publish(
                form.get("version", ""),
                form.get("descriptor_type", "CWL"),
                form.get("images", ""),
                (primary.filename or "", primary.read()) if primary and primary.filename else None,
                [(f.filename or "", f.read()) for f in request.files.getlist("secondary") if f.filename],
            )
            hg.publish_version(
                tool_id,
                req.version_id,
                req.files,
                list(req.images),
                primary=req.primary,
                descriptor_type=req.descriptor_type,
            )
            # the CLI's check: the registry recorded the SHA-256 of exactly what was sent
            check_recorded_checksums(req.files, hg.version_record(tool_id, req.version_id))
            common.flash_ok(f"published {tool_id} {req.version_id}: pinned, checksummed and signed")
            return redirect(url_for("ui.tools.version", tool_id=tool_id, version_id=req.version_id), 303)
        except HelixGateError as exc:
            error, status = common.message(exc), common.status_of(exc)
    return common.render_form(
        "tools/publish.html", error, status, tool=page, form=form, descriptor_types=DESCRIPTOR_TYPES
    )
