"""Discovery, JWKS and the token endpoint of the built-in token issuer, served at <public_url>/oidc."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import connexion
from flask import Response, g, jsonify, request

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

    @flask_app.post("/oidc/token")
    def _token() -> Response:
        # OAuth2 client_credentials for service identities (helixgate.service_credentials)
        from helixgate.service_credentials import token_endpoint

        g.request_id = uuid.uuid4().hex  # names this exchange in the audit trail and the response
        form = {k: v for k, v in request.form.items() if isinstance(v, str)}
        answer = token_endpoint(
            platform,
            form,
            request.headers.get("Authorization"),
            client_addr=request.remote_addr,
            request_id=g.request_id,
        )
        resp = jsonify(answer.body)
        resp.status_code = answer.status
        resp.headers.update(answer.headers)
        return resp
