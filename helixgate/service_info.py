"""GA4GH service-info 1.0 documents, extended by each service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from helixgate import __version__

_STARTED = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ServiceType:
    """What a service's service-info says it is: each service names its own."""

    service: str  # the service's name (its declaration's), the last part of its id
    group: str
    artifact: str
    version: str  # of the specification it implements
    name: str


CORE_TYPE = ServiceType("core", "dev.helixgate", "core", __version__, "HelixGate administration and audit")


def service_id(service: str, host: str) -> str:
    """Reverse-domain id: ``org.example.hg.helixgate.drs`` for hg.example.org; IPs stay whole."""
    import ipaddress

    if host.startswith("["):  # [v6]:port
        name = host[1 : host.find("]")].lower()
    elif host.count(":") == 1:  # name:port
        name = host.split(":", 1)[0].lower()
    else:  # name, or a bare v6 address
        name = host.lower()
    try:
        ipaddress.ip_address(name)
        return f"dev.helixgate.{service}.{name.replace('.', '-').replace(':', '-')}"
    except ValueError:
        return f"{'.'.join(reversed(name.split('.')))}.helixgate.{service}"


def base_service_info(kind: ServiceType, public_url: str, host_id: str) -> dict[str, Any]:
    name = kind.name
    return {
        "id": service_id(kind.service, host_id),
        "name": name,
        "type": {"group": kind.group, "artifact": kind.artifact, "version": kind.version},
        "description": f"{name}: every tool signed, every object hashed, every task verified.",
        "organization": {"name": "HelixGate", "url": public_url},
        "contactUrl": "mailto:security@helixgate.invalid",
        "documentationUrl": f"{public_url}/docs",
        "createdAt": _STARTED,
        "updatedAt": _STARTED,
        "environment": "production",
        "version": __version__,
    }
