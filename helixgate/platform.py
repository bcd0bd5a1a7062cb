"""The per-process object graph: settings, database, users, audit, token verification,
and each declared service's domain object and ports, built lazily on first use.

The platform knows services only through the declarations it is given
(``helixgate.services.ServiceDeclaration``); the composition root (``helixgate_app``) lists
them. Lookups are typed: ``platform.domain(DrsStore) -> DrsStore``,
``platform.port(DataPort) -> DataPort``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Mapping, TypeVar, cast

from helixgate import declaration as core_declaration
from helixgate.config import Settings
from helixgate.db import Database, migrate, startup_lock
from helixgate.errors import ConfigurationError
from helixgate.services import ServiceDeclaration

T = TypeVar("T")
PortFactory = Callable[["Platform"], object]


def _private_sqlite_file(url: str) -> None:
    """The embedded SQLite database (users, runs, parameters) is private to its owner; SQLite
    gives its -wal/-shm files the database file's mode."""
    import os

    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return
    path = url[len(prefix) :]
    try:
        # never open an existing database: closing any descriptor of a file drops every POSIX
        # lock this process holds on it, including those of a SQLite connection already open
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError:  # a read-only or foreign location: the database layer reports it
        return
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass


def _declarations(services: Iterable[ServiceDeclaration[Any]]) -> tuple[ServiceDeclaration[Any], ...]:
    """The core first (its tables and users come before any service's), each name once."""
    ordered = [core_declaration.SERVICE, *(s for s in services if s is not core_declaration.SERVICE)]
    names = [s.name for s in ordered]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"services declared more than once: {', '.join(duplicates)}")
    return tuple(ordered)


class Platform:
    def __init__(
        self,
        settings: Settings,
        services: Iterable[ServiceDeclaration[Any]] = (),
        *,
        remote_ports: Mapping[type[Any], PortFactory] | None = None,
        run_migrations: bool = True,
        holds_keys: bool = True,
        service_credential: str | None = None,
    ) -> None:
        """``services``: the declarations this process may use (the core is always one);
        ``remote_ports``: the core's HTTP implementation of each port, used when no service
        served in this process provides it. ``holds_keys=False``: a worker, which holds no key
        (:mod:`helixgate.process_keys`)."""
        from helixgate.audit import AuditTrail
        from helixgate.installation import default_container_scope, ensure_installation_id
        from helixgate.process_keys import process_keys
        from helixgate.users import UserDirectory
        from helixgate.web import _SessionSeen

        self.services = _declarations(services)
        self.remote_ports: Mapping[type[Any], PortFactory] = dict(remote_ports or {})
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private_sqlite_file(settings.effective_database_url)
        self.db = Database(settings.effective_database_url)
        self.users = UserDirectory(self.db)
        # Any number of processes may start at once on a fresh database: one migrates and
        # bootstraps, the others wait for it and then find the work done.
        with startup_lock(self.db):
            if run_migrations:
                migrate(self.db, [s.migrations for s in self.services if s.migrations])
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
        self._domains: dict[type[Any], object] = {}
        self._ports: dict[tuple[type[Any], PortFactory], object] = {}
        # the APIs this process serves (set by whoever mounts them): peers that live here are
        # called in-process, so a request never waits on a second request to its own server
        self.served: frozenset[str] = frozenset()
        self._lock = threading.RLock()  # a domain's build may look up another domain or port

    def domain(self, kind: type[T]) -> T:
        """The domain object of the declared service whose domain class is ``kind``, built once."""
        with self._lock:
            built = self._domains.get(kind)
            if built is None:
                service = next((s for s in self.services if s.domain is kind), None)
                if service is None:
                    raise ConfigurationError(f"no service declared to this platform builds {kind.__name__}")
                built = service.build(self)
                if not isinstance(built, kind):  # a declaration whose build returns something else
                    raise ConfigurationError(
                        f"service {service.name} built {type(built).__name__}, not {kind.__name__}"
                    )
                self._domains[kind] = built
            return cast(T, built)

    def port(self, kind: type[T]) -> T:
        """The implementation of the port ``kind`` (a Protocol of ``helixgate.ports``): the
        in-process one of a service served here (``served``), else the core's HTTP one.

        Each implementation is built once (a lookup before ``served`` is set gets the remote
        one, later lookups the in-process one).
        """
        with self._lock:  # one lock order: ports may build domains
            local = [s.provides[kind] for s in self.services if s.name in self.served and kind in s.provides]
            if len(local) > 1:
                raise ConfigurationError(f"more than one served service provides {kind.__name__}")
            factory = local[0] if local else self.remote_ports.get(kind)
            if factory is None:
                raise ConfigurationError(f"no implementation of {kind.__name__} is available to this platform")
            built = self._ports.get((kind, factory))
            if built is None:
                built = factory(self)
                self._ports[(kind, factory)] = built
            # the declarations map each port to its implementations: ``kind`` is their Protocol
            return cast(T, built)

    def service_token(self, on_behalf_of: str | None = None, ttl: int = 300) -> str:
        """A short-lived token for the service identity (see :meth:`ProcessKeys.service_token`)."""
        return self.keys.service_token()

    def close(self) -> None:
        self.keys.close()
        for svc in self._domains.values():
            close = getattr(svc, "close", None)
            if close:
                close()
        self.db.dispose()
