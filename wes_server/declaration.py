"""WES declares itself to the core (``helixgate.services``)."""

from __future__ import annotations

from helixgate.services import ServiceDeclaration
from wes_server.domain import WorkflowService, build

SERVICE: ServiceDeclaration[WorkflowService] = ServiceDeclaration(
    name="wes",
    base_path="/ga4gh/wes/v1",
    openapi="wes.yaml",
    handlers="wes_server.api",
    domain=WorkflowService,
    build=build,
    models=("wes_server.models",),
    migrations="wes_server.migrations",
)
