"""The per-process object graph: settings, database, users, audit, token verification,
and each service's domain object, built lazily on first use."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
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
        """``holds_keys=False``: a worker process, which holds no key of the platform: it
        appends to the audit chain without the checkpoint key, never opens the issuer's key and
        gets its service tokens with ``service_credential`` (or the configured one) from the
        core's token endpoint (:mod:`helixgate.service_credentials`)."""
        from helixgate.audit import AuditTrail, Checkpointer
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
        self.holds_keys = holds_keys
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
        self.issuer = builtin_issuer_for(settings) if settings.builtin_issuer and holds_keys else None
        if self.issuer is not None:
            # the key is created at start and the issuer URL noted: `helixgate token issue` only
            # ever uses this key, and refuses settings that name another issuer
            self.issuer.record_served()
        # a worker verifies no tokens; its verifier would only ever read the issuer's public keys
        self.verifier = make_verifier(settings, self.issuer or builtin_issuer_for(settings, create_key=False))
        self._service_credential = service_credential
        self._token_source: Callable[[], str] | None = None
        if not holds_keys:
            from helixgate.service_credentials import worker_token_source

            # a worker without a credential fails at start, not at its first run
            self._token_source = worker_token_source(settings, service_credential)
        # the audit writer signs the checkpoints that keyless writers (workers) reach
        self.checkpointer = Checkpointer(self.audit) if holds_keys else None
        if self.checkpointer is not None:
            _ = self.audit.key_id  # created here, by its owner (with its public half for verifiers)
            self.checkpointer.start()
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
        """A short-lived token for the service identity: minted here when this process holds
        the built-in issuer's key (the core API), otherwise obtained with the service
        credential from the core's token endpoint; ``service_token_file`` with an external IdP."""
        with self._lock:
            if self._token_source is None:
                from helixgate.service_credentials import service_token_source

                self._token_source = service_token_source(self.settings, self.issuer, self._service_credential)
            source = self._token_source
        return source()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        for svc in self._services.values():
            close = getattr(svc, "close", None)
            if close:
                close()
        self.db.dispose()
