"""The landing page ``/ui/``: what the signed-in user can do (from the permissions the APIs
enforce, as ``/me`` reports them) and, for those who may read runs, their latest runs."""

from __future__ import annotations

from flask import Blueprint, render_template, url_for

from helixgate.client import ClientError
from helixgate.sdk import WES, HelixGate
from helixgate_ui import session
from helixgate_ui.pages import runs_model as m

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
def index() -> str:
    user = session.current_user()
    permissions = frozenset(user.permissions)
    recent = None
    if "wes:read" in permissions:
        client = session.api()
        hg = client if isinstance(client, HelixGate) else HelixGate(client)
        try:
            recent = m.run_list(hg.api.get_object(f"{WES}/runs", params={"page_size": 5}))
        except ClientError:
            recent = None  # the summary is a courtesy: the runs page shows the API's answer
    return render_template("home.html", user=user, actions=m.landing_actions(permissions, url_for), recent=recent)
