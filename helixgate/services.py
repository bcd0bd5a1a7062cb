"""How a service declares itself to the core.

Each service package (and the core API itself, ``helixgate.declaration``) exports one
``ServiceDeclaration`` as ``<package>.declaration.SERVICE``. The core never imports a service
package: the composition root (``helixgate_app.services``) lists the declarations and hands
them to ``Platform`` (domain objects, in-process ports, migrations) and ``web.create_app``
(routes, handlers, OpenAPI documents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar

if TYPE_CHECKING:
    from helixgate.platform import Platform

D = TypeVar("D")


def ga4gh_error(status: int, message: str) -> dict[str, Any]:
    """The error body of WES, DRS and the core API: ``{msg, status_code}``."""
    return {"msg": message, "status_code": status}


def _no_ports() -> Mapping[type[Any], Callable[[Platform], object]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ServiceDeclaration(Generic[D]):
    """Everything the core needs to know about one service, and nothing it must guess.

    ``build`` makes the service's domain object (an instance of ``domain``) from the
    platform; ``Platform.domain(domain)`` calls it once per process. ``provides`` maps a core
    port (a Protocol of ``helixgate.ports``) to the in-process implementation this service
    offers; ``Platform.port`` uses it when the service is served in the same process.
    """

    name: str  # short name: audit records, ``helixgate serve <name>``, table prefix ``<name>_``
    base_path: str  # where its API is mounted, e.g. /ga4gh/drs/v1
    openapi: str  # file name of its document in openapi/
    handlers: str  # module whose functions handle the operations (snake_case(operationId))
    domain: type[D]
    build: Callable[[Platform], D]
    models: tuple[str, ...] = ()  # modules defining its tables (imported for Alembic)
    migrations: str | None = None  # package holding its Alembic environment and versions
    provides: Mapping[type[Any], Callable[[Platform], object]] = field(default_factory=_no_ports)
    error_body: Callable[[int, str], dict[str, Any]] = ga4gh_error  # the spec's error shape
    passports_in_body: bool = False  # POST bodies may carry GA4GH passports (DRS PassportAuth)

    @property
    def table_prefix(self) -> str:
        return f"{self.name}_"
