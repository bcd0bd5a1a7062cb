"""The core API (users, tokens, audit trail) declares itself like any service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from helixgate.services import ServiceDeclaration
from helixgate.users import UserDirectory

if TYPE_CHECKING:
    from helixgate.platform import Platform


def _users(platform: Platform) -> UserDirectory:
    return platform.users


SERVICE: ServiceDeclaration[UserDirectory] = ServiceDeclaration(
    name="core",
    base_path="/helixgate/v1",
    openapi="core.yaml",
    handlers="helixgate.core_api",
    domain=UserDirectory,
    build=_users,
    models=(
        "helixgate.users",
        "helixgate.audit",
        "helixgate.installation",
        "helixgate.service_credentials",
        "helixgate.login",
    ),
    migrations="helixgate.migrations",
)
