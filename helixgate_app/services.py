"""The services HelixGate is made of, and how a process's Platform is put together.

Adding a service: write its package with a ``declaration.SERVICE`` (see
``helixgate.services.ServiceDeclaration``), add it to ``SERVICES`` here and, when it can be
served alone, to ``ROLES``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from drs_store.declaration import SERVICE as DRS
from helixgate.config import Settings
from helixgate.db import Database, migrate
from helixgate.declaration import SERVICE as CORE
from helixgate.errors import ConfigurationError
from helixgate.platform import Platform
from helixgate.ports import DataPort, ToolPort
from helixgate.ports_http import http_data_port, http_tool_port
from helixgate.services import ServiceDeclaration
from trs_registry.declaration import SERVICE as TRS
from wes_server.declaration import SERVICE as WES

# every service, the core first (migrations run in this order)
SERVICES: tuple[ServiceDeclaration[Any], ...] = (CORE, DRS, TRS, WES)

# what ``helixgate serve <role>`` mounts (the core API is in every API process)
ROLES: Mapping[str, tuple[ServiceDeclaration[Any], ...]] = {
    "all": (WES, TRS, DRS, CORE),
    "wes": (WES, CORE),
    "trs": (TRS, CORE),
    "drs": (DRS, CORE),
    "core": (CORE,),
}

# the core's HTTP implementation of each port (``helixgate.ports``), used for a service that
# is not served in this process
REMOTE_PORTS: Mapping[type[Any], Callable[[Platform], object]] = {
    DataPort: http_data_port,
    ToolPort: http_tool_port,
}


def named(names: Iterable[str]) -> tuple[ServiceDeclaration[Any], ...]:
    """The declarations called ``names``, in that order."""
    by_name = {s.name: s for s in SERVICES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigurationError(f"unknown service(s): {', '.join(unknown)}")
    return tuple(by_name[n] for n in names)


def migration_packages() -> tuple[str, ...]:
    return tuple(s.migrations for s in SERVICES if s.migrations)


def migrate_all(db: Database) -> None:
    """Bring every service's tables to their newest revision (the core's first)."""
    migrate(db, migration_packages())


def build_platform(settings: Settings, *, run_migrations: bool = True) -> Platform:
    """The Platform of one HelixGate process: every service declared, ports wired."""
    return Platform(settings, SERVICES, remote_ports=REMOTE_PORTS, run_migrations=run_migrations)
