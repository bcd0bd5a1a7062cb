"""Data stewards' pages: datasets, their objects with checksums and provenance, grants (grant and
revoke after a confirmation step) and uploads with progress.

Every call goes to the public DRS API with the signed-in user's token. An upload is checked as
the CLI checks one: the SHA-256 the browser computed (or the user typed) travels as the data
store's expected checksum, so bytes that changed on the way are refused (422, nothing stored);
the dashboard also hashes what it relayed and deletes the object unless the data store stored
exactly those bytes (``data_view.relay_upload``).
"""

from __future__ import annotations

from typing import IO, Any, Iterator

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from helixgate.client import ClientError
from helixgate.errors import BadRequest, HelixGateError
from helixgate.sdk import DRS, sha256_of
from helixgate_ui import NavItem
from helixgate_ui.pages import catalog_common as common
from helixgate_ui.pages.data_view import (
    DatasetRow,
    dataset_row,
    dataset_rows,
    download_name,
    expected_sha256,
    grant_rows,
    object_name,
    object_row,
    parse_dataset_form,
    parse_username,
    relay_upload,
    verified_stream,
)

blueprint = Blueprint("data", __name__, url_prefix="/data")
NAV = [NavItem("Data", "ui.data.index", "drs:read")]
PAGE = 50


def _datasets() -> list[dict[str, Any]]:
    return list(common.client("drs").api.get_object(f"{DRS}/x-helixgate/datasets").get("datasets") or [])


@blueprint.get("/")
@common.login_required
def index() -> str:
    me = common.me()
    return render_template(
        "data/index.html",
        datasets=dataset_rows(_datasets(), me),
        may_create="drs:write" in me.get("permissions", []),
        form={},
        error="",
    )


@blueprint.post("/datasets")
@common.login_required
def create_dataset() -> str | Response | tuple[str, int]:
    me = common.me()
    if "drs:write" not in me.get("permissions", []):
        common.refuse("creating datasets needs the data-steward role")
    form = request.form
    try:
        body = parse_dataset_form(form.get("name", ""), form.get("description", ""), form.get("public") == "on")
        ds = common.client("drs").api.post_object(f"{DRS}/x-helixgate/datasets", body)
        common.flash_ok(f"created dataset {ds.get('name')}")
        return redirect(url_for("ui.data.dataset", dataset_id=str(ds.get("id"))), 303)
    except HelixGateError as exc:
        return (
            render_template(
                "data/index.html",
                datasets=dataset_rows(_datasets(), me),
                may_create=True,
                form=form,
                error=common.message(exc),
            ),
            common.status_of(exc),
        )


@blueprint.get("/datasets/<dataset_id>")
@common.login_required
def dataset(dataset_id: str) -> str:
    hg, me = common.client("drs"), common.me()
    d = common.quoted(dataset_id)
    ds = dataset_row(hg.get_dataset(dataset_id), me)
    token = request.args.get("page_token", "")[:64]
    params = {"page_size": PAGE, **({"page_token": token} if token else {})}
    page = hg.api.get_object(f"{DRS}/x-helixgate/datasets/{d}/objects", params=params)
    grants = None
    if ds.may_grant:
        answer = hg.api.get_object(f"{DRS}/x-helixgate/datasets/{d}/grants", params={"include_revoked": "true"})
        grants = grant_rows(answer.get("grants") or [])
    return render_template(
        "data/dataset.html",
        ds=ds,
        objects=[object_row(o) for o in page.get("objects") or []],
        next_token=str(page.get("next_page_token") or ""),
        grants=grants,
    )


def _confirm_or_do(action: str, dataset_id: str, username: str) -> str | Response | tuple[str, int]:
    hg = common.client("drs")
    ds = dataset_row(hg.get_dataset(dataset_id), common.me())
    if not ds.may_grant:
        common.refuse(f"only the creator of dataset {ds.name} may manage its grants")
    try:
        username = parse_username(username)
    except BadRequest as exc:
        common.flash_error(exc.message)
        return redirect(url_for("ui.data.dataset", dataset_id=dataset_id), 303)
    if request.form.get("confirm") != "yes":
        return render_template("data/confirm.html", ds=ds, action=action, username=username)
    d, u = common.quoted(dataset_id), common.quoted(username)
    try:
        if action == "grant":
            hg.api.post_object(f"{DRS}/x-helixgate/datasets/{d}/grants", {"username": username})
            common.flash_ok(f"granted {username} read access to {ds.name}")
        else:
            hg.api.request("DELETE", f"{DRS}/x-helixgate/datasets/{d}/grants/{u}")
            common.flash_ok(f"revoked {username}'s read access to {ds.name}")
    except ClientError as exc:
        if exc.status in (401, 403):
            raise
        common.flash_error(common.message(exc))
    return redirect(url_for("ui.data.dataset", dataset_id=dataset_id), 303)


@blueprint.post("/datasets/<dataset_id>/grants")
@common.login_required
def grant(dataset_id: str) -> str | Response | tuple[str, int]:
    return _confirm_or_do("grant", dataset_id, request.form.get("username", ""))


@blueprint.post("/datasets/<dataset_id>/grants/<username>/revoke")
@common.login_required
def revoke(dataset_id: str, username: str) -> str | Response | tuple[str, int]:
    return _confirm_or_do("revoke", dataset_id, username)


@blueprint.get("/objects")
@common.login_required
def find() -> str | tuple[str, int]:
    """Objects with a given SHA-256 that the user may read (where did these bytes go?)."""
    raw = request.args.get("checksum", "")
    try:
        digest = expected_sha256(raw)
    except HelixGateError as exc:
        return render_template("data/find.html", checksum=raw[:80], objects=None, error=common.message(exc)), 400
    objects = [object_row(o) for o in common.client("drs").find_objects(digest)] if digest else None
    return render_template("data/find.html", checksum=digest or "", objects=objects, error="")


@blueprint.get("/objects/<object_id>")
@common.login_required
def obj(object_id: str) -> str:
    answer = common.client("drs").get_object(object_id)
    return render_template("data/object.html", o=object_row(answer), run_pages=common.has_page("ui.runs.show_run"))


@blueprint.get("/objects/<object_id>/download")
@common.login_required
def download(object_id: str) -> Response:
    """The object's bytes, streamed from the DRS access URL with the user's token and checked
    against the DRS record on the way (the last piece is held back until they match)."""
    hg = common.client("drs")
    answer = hg.get_object(object_id)
    row = object_row(answer)
    method = next((m for m in answer.get("access_methods") or [] if m.get("type") == "https"), None)
    if method is None or row.size is None or not row.sha256 or row.quarantined:
        common.refuse(f"object {row.name or row.id} cannot be downloaded (quarantined, a bundle or no https access)")
    access = hg.api.get_object(
        f"{DRS}/objects/{common.quoted(row.id)}/access/{common.quoted(str(method.get('access_id')))}"
    )
    upstream = hg.api.request("GET", str(access.get("url") or ""), stream=True)

    def body() -> Iterator[bytes]:
        try:
            yield from verified_stream(
                upstream.iter_content(1024 * 1024), expected_sha256=row.sha256, size=int(row.size or 0), what=row.uri
            )
        finally:
            upstream.close()

    return Response(
        body(),
        mimetype="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{download_name(row)}"',
            "Content-Length": str(row.size),
            "X-Checksum-SHA256": row.sha256,
        },
    )


def _upload_checked(
    stream: IO[bytes], *, name: str, dataset_id: str | None, expected: str | None, length: int | None
) -> dict[str, Any]:
    return relay_upload(
        common.client("drs"), stream, name=name, dataset_id=dataset_id, expected=expected, length=length
    )


def _upload_targets(me: dict[str, Any]) -> list[DatasetRow]:
    if "drs:write" not in me.get("permissions", []):
        common.refuse("uploading data needs the data-steward role")
    return [d for d in dataset_rows(_datasets(), me) if d.may_upload]


def _uploaded(obj: dict[str, Any], name: str) -> Response:
    common.flash_ok(f"uploaded {name}: {obj.get('size')} bytes, sha256 {sha256_of(obj)}")
    target = url_for("ui.data.obj", object_id=str(obj.get("id")))
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":  # upload.js navigates itself
        return Response("", 201, headers={"X-Location": target})
    return redirect(target, 303)


@blueprint.route("/upload", methods=["GET", "POST"])
@common.login_required
def upload() -> str | Response | tuple[str, int]:
    """The upload form; without JavaScript it posts here (multipart, bounded like every form)."""
    targets = _upload_targets(common.me())
    chosen = request.values.get("dataset_id", "")
    if request.method == "GET":
        return render_template("data/upload.html", targets=targets, chosen=chosen, error="")
    try:
        file = request.files.get("file")
        if file is None or not file.filename:
            raise BadRequest("choose a file to upload")
        if chosen and chosen not in {d.id for d in targets}:
            raise BadRequest("choose one of your datasets (or none)")
        name = object_name(request.form.get("name", ""), file.filename)
        expected = expected_sha256(request.form.get("sha256", ""))
        obj = _upload_checked(file.stream, name=name, dataset_id=chosen or None, expected=expected, length=None)
        return _uploaded(obj, name)
    except HelixGateError as exc:
        page = render_template("data/upload.html", targets=targets, chosen=chosen, error=common.message(exc))
        return page, common.status_of(exc)


@blueprint.post("/upload/stream")
@common.login_required
def upload_stream() -> Response | tuple[str, int]:
    """upload.js sends the file itself as the body (any size up to the data store's limit, never
    spooled here); name, dataset and expected SHA-256 travel in the query."""
    targets = _upload_targets(common.me())
    chosen = request.args.get("dataset_id", "")
    try:
        if chosen and chosen not in {d.id for d in targets}:
            raise BadRequest("choose one of your datasets (or none)")
        if request.content_length is None:
            raise BadRequest("the upload needs a Content-Length")
        name = object_name(request.args.get("name", ""), request.args.get("filename", ""))
        expected = expected_sha256(request.args.get("sha256", ""))
        obj = _upload_checked(
            request.stream, name=name, dataset_id=chosen or None, expected=expected, length=request.content_length
        )
        return _uploaded(obj, name)
    except HelixGateError as exc:
        page = render_template("data/upload.html", targets=targets, chosen=chosen, error=common.message(exc))
        return page, common.status_of(exc)
