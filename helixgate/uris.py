"""URI scheme and host parsing per RFC 3986, in one place.

The scheme is case-insensitive (``DRS://`` is ``drs://``), so is the host; a reference
with surrounding whitespace is refused rather than guessed at. Every check that asks
"is this a drs:// (trs://, file://, https://) reference?" goes through :func:`scheme_of`
or :func:`parse_drs`, so no spelling of a scheme can skip a check another spelling gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from helixgate.errors import BadRequest

# RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_DRS = re.compile(r"^drs://([^/?#\s]+)/([A-Za-z0-9._~-]+)$", re.IGNORECASE)
# characters Python's urlsplit silently strips (WHATWG C0 control or space)
_STRIPPED = "".join(chr(i) for i in range(0x21))


def scheme_of(value: str) -> str | None:
    """The lower-cased scheme of ``value`` once surrounding whitespace/controls are ignored,
    or None when it does not start with one (so ``" DRS://x"`` says ``drs``: callers that
    must not accept the whitespace use :func:`require_clean`)."""
    m = _SCHEME.match(value.strip(_STRIPPED))
    return m.group(1).lower() if m else None


def has_scheme(value: str, *schemes: str) -> bool:
    return scheme_of(value) in schemes


def require_clean(value: str, what: str = "URI") -> str:
    """Refuse a URI with leading or trailing whitespace or control characters."""
    if value != value.strip(_STRIPPED):
        raise BadRequest(f"{what} {value[:120]!r} has surrounding whitespace or control characters")
    return value


@dataclass(frozen=True)
class DrsRef:
    host: str  # lower-cased (RFC 3986: hosts are case-insensitive)
    object_id: str

    @property
    def uri(self) -> str:
        """The canonical spelling: ``drs://<host>/<id>``."""
        return f"drs://{self.host}/{self.object_id}"


def parse_drs(value: str) -> DrsRef | None:
    """None if ``value`` is not a drs reference (in any spelling); its parts if it is one;
    BadRequest if it is one but malformed or wrapped in whitespace."""
    if scheme_of(value) != "drs":
        return None
    require_clean(value, "DRS URI")
    m = _DRS.match(value)
    if not m:
        raise BadRequest(f"malformed DRS URI {value[:120]!r}: expected drs://<host>/<id>")
    return DrsRef(m.group(1).lower(), m.group(2))
