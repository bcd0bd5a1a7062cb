"""TRS declares itself to the core (``helixgate.services``)."""

from __future__ import annotations

from typing import Any

from helixgate.ports import ToolPort
from helixgate.services import ServiceDeclaration
from trs_registry import port
from trs_registry.domain import TrsRegistry, build


def trs_error(status: int, message: str) -> dict[str, Any]:
    """TRS 2.0.1's error shape: ``{code, message}``."""
    return {"code": status, "message": message}


SERVICE: ServiceDeclaration[TrsRegistry] = ServiceDeclaration(
    name="trs",
    base_path="/ga4gh/trs/v2",
    openapi="trs.yaml",
    handlers="trs_registry.api",
    domain=TrsRegistry,
    build=build,
    models=("trs_registry.models",),
    migrations="trs_registry.migrations",
    error_body=trs_error,
    provides={ToolPort: port.build},
)
