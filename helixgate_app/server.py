"""Serving HelixGate with uvicorn: all APIs on one address, or one service alone, with TLS."""

from __future__ import annotations

import logging
import ssl
from typing import Any, Iterable

import uvicorn

from helixgate.config import Settings
from helixgate.platform import Platform
from helixgate.services import ServiceDeclaration
from helixgate.web import create_app

log = logging.getLogger("helixgate.server")


class _TLSConfig(uvicorn.Config):
    """uvicorn config whose TLS context refuses anything older than TLS 1.2."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def build_app(platform: Platform, services: Iterable[ServiceDeclaration[Any]]) -> Any:
    """The app serving ``services``; they are this process's from now on (``Platform.served``)."""
    from helixgate.oidc_routes import add_oidc_routes

    services = tuple(services)
    platform.served = frozenset(s.name for s in services)

    def extra_routes(app: Any) -> None:
        add_oidc_routes(app, platform)
        # the web UI lives with the core API (users, /me): one origin for cookies and the issuer
        if "core" in platform.served and platform.settings.ui_enabled:
            import helixgate_ui

            helixgate_ui.mount(app, platform)

    return create_app(lambda: platform, services, extra_routes=extra_routes)


def make_server(settings: Settings, platform: Platform, services: Iterable[ServiceDeclaration[Any]]) -> uvicorn.Server:
    app = build_app(platform, services)
    config = _TLSConfig(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=512,
        # X-Forwarded-* are handled by helixgate.web.PublicOriginMiddleware (trusted_proxies only)
        proxy_headers=False,
    )
    return uvicorn.Server(config)
