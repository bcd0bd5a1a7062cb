"""Discovery and JWKS of the built-in token issuer, served at <public_url>/oidc."""

from __future__ import annotations

from typing import TYPE_CHECKING

import connexion
from flask import Response, jsonify

if TYPE_CHECKING:
    from helixgate.platform import Platform


def add_oidc_routes(app: connexion.FlaskApp, platform: Platform) -> None:
    issuer = platform.issuer
    if issuer is None:
        return
    flask_app = app.app

    @flask_app.get("/oidc/.well-known/openid-configuration")
    def _discovery() -> Response:
        return jsonify(issuer.discovery_document())

    @flask_app.get("/oidc/jwks.json")
    def _jwks() -> Response:
        return jsonify(issuer.jwks())
