"""GA4GH service-info 1.0 documents, extended by each service."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from helixgate import __version__

_STARTED = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")

ARTIFACTS = {
    "wes": ("org.ga4gh", "wes", "1.1.0", "HelixGate workflow execution service"),
    "trs": ("org.ga4gh", "trs", "2.0.1", "HelixGate tool registry"),
    "drs": ("org.ga4gh", "drs", "1.5.0", "HelixGate data repository"),
    "core": ("dev.helixgate", "core", __version__, "HelixGate administration and audit"),
}


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


def base_service_info(service: str, public_url: str, host_id: str) -> dict[str, Any]:
    group, artifact, spec_version, name = ARTIFACTS[service]
    return {
        "id": service_id(service, host_id),
        "name": name,
        "type": {"group": group, "artifact": artifact, "version": spec_version},
        "description": f"{name}: every tool signed, every object hashed, every task verified.",
        "organization": {"name": "HelixGate", "url": public_url},
        "contactUrl": "mailto:security@helixgate.invalid",
        "documentationUrl": f"{public_url}/docs",
        "createdAt": _STARTED,
        "updatedAt": _STARTED,
        "environment": "production",
        "version": __version__,
    }
