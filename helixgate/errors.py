"""One base error class for the whole platform.

Every domain error carries an HTTP status and a message that is safe to show to a
client (no stack traces, no secrets). The API layer turns it into each spec's error
shape: WES/DRS ``{msg, status_code}``, TRS ``{code, message}``.
"""

from __future__ import annotations

from typing import Any


class HelixGateError(Exception):
    """Base class: ``status`` is the HTTP status, ``message`` is client-safe."""

    status: int = 500
    kind: str = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class BadRequest(HelixGateError):
    status = 400
    kind = "bad_request"


class Unauthorized(HelixGateError):
    status = 401
    kind = "unauthorized"


class Forbidden(HelixGateError):
    status = 403
    kind = "forbidden"


class NotFound(HelixGateError):
    status = 404
    kind = "not_found"


class Hidden(NotFound):
    """A refusal answered as 'not found' so the caller learns nothing about existence.

    The client sees only ``message``; the guard records a security event with
    ``internal_reason`` (unless the raiser audits it itself: ``audit_here=False``).
    """

    audit_here = True

    def __init__(self, message: str, internal_reason: str, subject: str | None = None) -> None:
        super().__init__(message)
        self.internal_reason = internal_reason
        self.subject = subject


class Conflict(HelixGateError):
    status = 409
    kind = "conflict"


class PayloadTooLarge(HelixGateError):
    status = 413
    kind = "payload_too_large"


class UpstreamError(HelixGateError):
    """A dependency (registry, S3, SQS, another service) failed after bounded retries."""

    status = 502
    kind = "upstream_error"


class ConfigurationError(HelixGateError):
    """Invalid configuration; raised at start-up and names the setting."""

    status = 500
    kind = "configuration_error"


class IntegrityError(HelixGateError):
    """A checksum, digest or signature did not match. Always a security event.

    ``expected``/``actual`` say exactly what differed; ``subject`` names the thing checked.
    """

    status = 422
    kind = "integrity_error"

    def __init__(
        self,
        message: str,
        *,
        subject: str = "",
        expected: str | None = None,
        actual: str | None = None,
        status: int | None = None,
    ) -> None:
        details: dict[str, Any] = {"subject": subject}
        if expected is not None:
            details["expected"] = expected
        if actual is not None:
            details["actual"] = actual
        super().__init__(message, status=status, details=details)
        self.subject = subject
        self.expected = expected
        self.actual = actual


class VerificationError(IntegrityError):
    """A signature bundle or in-toto statement failed verification."""

    kind = "verification_error"
