"""Which keys a process holds, decided once at its start (#14 key separation).

The core API process (``holds_keys=True``) holds the built-in issuer's key (it mints the
service identity's tokens itself) and the audit checkpoint key (its :class:`Checkpointer`
signs what every writer appended). A worker (``holds_keys=False``) holds neither: it never
opens or creates a key file, and gets the service identity's tokens with its service
credential from the core's token endpoint (:mod:`helixgate.service_credentials`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from helixgate.audit import AuditTrail, Checkpointer
from helixgate.auth import TokenVerifier, builtin_issuer_for, make_verifier
from helixgate.config import Settings
from helixgate.issuer import BuiltinIssuer


@dataclass
class ProcessKeys:
    settings: Settings
    issuer: BuiltinIssuer | None
    verifier: TokenVerifier
    checkpointer: Checkpointer | None
    service_credential: str | None = None
    _token_source: Callable[[], str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def service_token(self) -> str:
        """A short-lived token for the service identity: minted here with the issuer's key (the
        core API), otherwise bought with the service credential at the core's token endpoint;
        ``service_token_file`` with an external IdP."""
        with self._lock:
            if self._token_source is None:
                from helixgate.service_credentials import service_token_source

                self._token_source = service_token_source(self.settings, self.issuer, self.service_credential)
            source = self._token_source
        return source()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()


def process_keys(
    settings: Settings, audit: AuditTrail, *, holds_keys: bool, service_credential: str | None = None
) -> ProcessKeys:
    """The keys of a process; ``audit`` must be built with ``signer=holds_keys``."""
    if not holds_keys:
        from helixgate.service_credentials import worker_token_source

        # a worker verifies no tokens (its verifier would only read the issuer's public keys);
        # one without a credential fails at start, not at its first run
        verifier = make_verifier(settings, builtin_issuer_for(settings, create_key=False))
        keys = ProcessKeys(settings, None, verifier, None, service_credential)
        keys._token_source = worker_token_source(settings, service_credential)
        return keys
    issuer = builtin_issuer_for(settings) if settings.builtin_issuer else None
    if issuer is not None:
        # the key is created at start and the issuer URL noted: `helixgate token issue` only
        # ever uses this key, and refuses settings that name another issuer
        issuer.record_served()
    _ = audit.key_id  # the checkpoint key, created here by its owner (with its public half)
    checkpointer = Checkpointer(audit)
    checkpointer.start()
    return ProcessKeys(settings, issuer, make_verifier(settings, issuer), checkpointer, service_credential)
