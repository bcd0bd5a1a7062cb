"""The per-process object graph: settings, database, users, audit, token verification,
and each service's domain object, built lazily on first use."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from helixgate.config import Settings
from helixgate.db import Database, migrate, startup_lock

DOMAIN_FACTORIES = {
    "drs": "drs_store.domain:build",
    "trs": "trs_registry.domain:build",
    "wes": "wes_server.domain:build",
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
    def __init__(
        self,
        settings: Settings,
        *,
        run_migrations: bool = True,
        holds_keys: bool = True,
        service_credential: str | None = None,
    ) -> None:
        """``holds_keys=False``: a worker, which holds no key (:mod:`helixgate.process_keys`)."""
        from helixgate.audit import AuditTrail
        from helixgate.installation import default_container_scope, ensure_installation_id
        from helixgate.process_keys import process_keys
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
        self.audit = AuditTrail(self.db, settings.data_dir / "audit", signer=holds_keys)
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
        self.keys = process_keys(settings, self.audit, holds_keys=holds_keys, service_credential=service_credential)
        self.issuer, self.verifier = self.keys.issuer, self.keys.verifier
        self.session_seen = _SessionSeen()
        self._services: dict[str, Any] = {}
        # the APIs this process serves (set by whoever mounts them): peers that live here are
        # called in-process, so a request never waits on a second request to its own server
        self.served: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def service(self, name: str) -> Any:
        """The domain object of one service (``drs``, ``trs``, ``wes``), built once."""
        with self._lock:
            if name not in self._services:
                module, _, attr = DOMAIN_FACTORIES[name].partition(":")
                self._services[name] = getattr(importlib.import_module(module), attr)(self)
            return self._services[name]

    def service_token(self, on_behalf_of: str | None = None, ttl: int = 300) -> str:
        """A short-lived token for the service identity (see :meth:`ProcessKeys.service_token`)."""
        return self.keys.service_token()

    def close(self) -> None:
        self.keys.close()
        for svc in self._services.values():
            close = getattr(svc, "close", None)
            if close:
                close()
        self.db.dispose()
