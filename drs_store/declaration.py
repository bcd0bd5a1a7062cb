"""DRS declares itself to the core (``helixgate.services``)."""

from __future__ import annotations

from drs_store import port
from drs_store.domain import DrsStore, build
from helixgate.ports import DataPort
from helixgate.services import ServiceDeclaration

SERVICE: ServiceDeclaration[DrsStore] = ServiceDeclaration(
    name="drs",
    base_path="/ga4gh/drs/v1",
    openapi="drs.yaml",
    handlers="drs_store.api",
    domain=DrsStore,
    build=build,
    models=("drs_store.models",),
    migrations="drs_store.migrations",
    passports_in_body=True,
    provides={DataPort: port.build},
)
