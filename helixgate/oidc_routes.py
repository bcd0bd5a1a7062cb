"""Discovery and JWKS of the built-in token issuer, served at <public_url>/oidc."""

from __future__ import annotations

from typing import Any

from flask import jsonify


def add_oidc_routes(app: Any, platform: Any) -> None:
    issuer = platform.issuer
    if issuer is None:
        return
    flask_app = app.app

    @flask_app.get("/oidc/.well-known/openid-configuration")
    def _discovery() -> Any:
        return jsonify(issuer.discovery_document())

    @flask_app.get("/oidc/jwks.json")
    def _jwks() -> Any:
        return jsonify(issuer.jwks())
