"""The per-process object graph: settings, database, users, audit, token verification,
and each service's domain object, built lazily on first use."""

from __future__ import annotations

import importlib
import threading
from typing import Any, TypeVar, cast

from helixgate.config import Settings
from helixgate.db import Database, migrate, startup_lock
from helixgate.ports import DataPort, ToolPort

DOMAIN_FACTORIES = {
    "drs": "drs_store.domain:build",
    "trs": "trs_registry.domain:build",
    "wes": "wes_server.domain:build",
}

P = TypeVar("P")
# The core ports: the service that owns each, its in-process provider (used when that service
# is served in this process) and the core's HTTP client factory (``helixgate.ports_http``).
# (Interim table: the services' declarations will say what they provide.)
PORT_PROVIDERS: dict[type, tuple[str, str, str]] = {
    DataPort: ("drs", "drs_store.port:build", "helixgate.ports_http:http_data_port"),
    ToolPort: ("trs", "trs_registry.port:build", "helixgate.ports_http:http_tool_port"),
}


def _private_sqlite_file(url: str) -> None:
    """The embedded SQLite database (users, runs, parameters) is private to its owner; SQLite
    gives its -wal/-shm files the database file's mode."""
    import os

    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return
    path = url[len(prefix) :]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
    except OSError:  # a read-only or foreign location: the database layer reports it
        pass


class Platform:
    def __init__(self, settings: Settings, *, run_migrations: bool = True) -> None:
        from helixgate.audit import AuditTrail
        from helixgate.auth import builtin_issuer_for, make_verifier
        from helixgate.installation import default_container_scope, ensure_installation_id
        from helixgate.users import UserDirectory
        from helixgate.web import _SessionSeen

        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private_sqlite_file(settings.effective_database_url)
        self.db = Database(settings.effective_database_url)
        self.users = UserDirectory(self.db)
        # Any number of processes may start at once on a fresh database: one migrates and
        # bootstraps, the others wait for it and then find the work done.
        with startup_lock(self.db):
            if run_migrations:
                migrate(self.db)
            self.installation_id = ensure_installation_id(self.db)
            # the identity WES workers use to read data on behalf of users (created if missing,
            # never modified: its state is the administrators' decision)
            self.users.ensure(settings.service_user, roles=("service",))
            # the first administrator exists once per deployment: a restart never re-creates,
            # re-activates or re-promotes it (recorded in core_bootstrap)
            bootstrapped = bool(settings.bootstrap_admin) and self.users.bootstrap_admin(settings.bootstrap_admin)
        if not settings.container_scope:
            # this deployment's own containers: derived from its database, so every replica and
            # worker agrees and another deployment on the same engine never matches
            settings = settings.replace(container_scope=default_container_scope(self.installation_id))
        self.settings = settings
        self.audit = AuditTrail(self.db, settings.data_dir / "audit")
        if bootstrapped:
            self.audit.record(
                category="change",
                action="core.user.bootstrap",
                outcome="success",
                actor=None,
                service="core",
                target=settings.bootstrap_admin,
                details={"roles": ["admin"], "first_start": True},
            )
        self.issuer = builtin_issuer_for(settings) if settings.builtin_issuer else None
        if self.issuer is not None:
            # the key is created at start and the issuer URL noted: `helixgate token issue` only
            # ever uses this key, and refuses settings that name another issuer
            self.issuer.record_served()
        self.verifier = make_verifier(settings, self.issuer)
        self.session_seen = _SessionSeen()
        self._services: dict[str, Any] = {}
        # the APIs this process serves (set by whoever mounts them): peers that live here are
        # called in-process, so a request never waits on a second request to its own server
        self.served: frozenset[str] = frozenset()
        # re-entrant: building one domain may build the domains its in-process ports use
        self._lock = threading.RLock()
        self._ports: dict[tuple[type, bool], object] = {}

    def service(self, name: str) -> Any:
        """The domain object of one service (``drs``, ``trs``, ``wes``), built once."""
        with self._lock:
            if name not in self._services:
                module, _, attr = DOMAIN_FACTORIES[name].partition(":")
                self._services[name] = getattr(importlib.import_module(module), attr)(self)
            return self._services[name]

    def port(self, kind: type[P]) -> P:
        """The implementation of core port ``kind`` for this process: the owning service's
        in-process provider when it is served here, else the HTTP client of that service."""
        owner, in_process, remote = PORT_PROVIDERS[kind]
        local = owner in self.served
        with self._lock:  # one lock order: ports build domains
            if (kind, local) not in self._ports:
                module, _, attr = (in_process if local else remote).partition(":")
                self._ports[(kind, local)] = getattr(importlib.import_module(module), attr)(self)
            return cast(P, self._ports[(kind, local)])

    def service_token(self, on_behalf_of: str | None = None, ttl: int = 300) -> str:
        """A short-lived token for the service identity, minted by the built-in issuer.

        Deployments with an external IdP configure ``service_token_file`` instead.
        """
        if self.settings.service_token_file:
            from pathlib import Path

            return Path(self.settings.service_token_file).read_text().strip()
        if self.issuer is None:
            from helixgate.errors import ConfigurationError

            raise ConfigurationError("service_token_file is required when builtin_issuer is off")
        return self.issuer.issue(self.settings.service_user, ttl)

    def close(self) -> None:
        for svc in self._services.values():
            close = getattr(svc, "close", None)
            if close:
                close()
        self.db.dispose()
