"""Role-based access control, default deny.

Every operation in ``openapi/*.yaml`` declares the permission it needs in
``x-helixgate-permission``; ``helixgate.web`` enforces it in one place. Object-level
rules (run ownership, DRS grants) are applied by each service's domain code on top.
"""

from __future__ import annotations

from typing import Final, Iterable

PUBLIC: Final = "public"  # no authentication (service-info, OIDC discovery, trust material)
AUTHENTICATED: Final = "authenticated"  # any registered, active user

ROLES: Final = ("viewer", "analyst", "tool-developer", "data-steward", "auditor", "admin", "service")

_VIEWER = frozenset({"trs:read", "drs:read", "wes:read"})

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "viewer": _VIEWER,
    "analyst": _VIEWER | {"wes:submit", "wes:cancel"},
    "tool-developer": _VIEWER | {"trs:publish"},
    "data-steward": _VIEWER | {"drs:write", "drs:grant"},
    "auditor": _VIEWER | {"audit:read", "wes:read-all"},
    "admin": _VIEWER | {"admin:users", "trs:admin", "drs:admin"},
    # internal identity of the WES workers: reads data on behalf of a user, registers outputs
    "service": frozenset({"trs:read", "drs:read", "drs:write", "drs:delegate"}),
}

PERMISSIONS: Final = frozenset({PUBLIC, AUTHENTICATED}).union(*ROLE_PERMISSIONS.values())

# Permissions an unauthenticated caller may use; the domain still decides per object
# (anonymous DRS reads see only public objects; anonymous TRS reads only if configured).
ANONYMOUS_CAPABLE: Final = frozenset({PUBLIC, "trs:read", "drs:read"})


def permissions_for(roles: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for role in roles:
        out |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(out)


def allows(roles: Iterable[str], permission: str) -> bool:
    if permission == PUBLIC:
        return True
    if permission == AUTHENTICATED:
        return True  # the caller is known to be registered and active
    return permission in permissions_for(roles)
