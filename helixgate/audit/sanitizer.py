"""What may enter the audit trail: secrets dropped, strings and containers bounded, JSON-safe."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from helixgate.audit.records import COLUMN_LIMITS, _canonical, _iso

_DETAIL_STRING_LIMIT: Final = 1024
_DETAIL_ITEMS_LIMIT: Final = 100
_DETAIL_DEPTH_LIMIT: Final = 6
_DETAILS_TOTAL_LIMIT: Final = 16 * 1024
_TRUNCATED: Final = "...(truncated)"

# Key names (lower-cased, without '-'/'_') whose values are never recorded.
_SECRET_KEY_PARTS: Final = (
    "authorization",
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "cookie",
    "credential",
    "privatekey",
    "apikey",
    "accesskey",
    "datakey",
    "masterkey",
    "signingkey",
    "sessionkey",
    "keymaterial",
)
_SECRET_KEY_EXACT: Final = frozenset({"key", "jwt", "bearer", "pem", "sig", "otp"})
# Secrets that hide in values under innocent keys (e.g. a copied header line).
_BEARER_VALUE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_JWT_VALUE = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# service credentials (helixgate.service_credentials): the id is kept, the secret never
_CREDENTIAL_VALUE = re.compile(r"\b(hgsc1\.[0-9a-f]{32})\.[A-Za-z0-9_-]{20,}")
_PEM_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; lone surrogates cannot be encoded as UTF-8.
    value = value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8")


def column_text(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    return _clean_text(str(value))[: COLUMN_LIMITS[name]]


def _is_secret_key(key: str) -> bool:
    norm = key.lower().replace("-", "").replace("_", "").replace(" ", "")
    return norm in _SECRET_KEY_EXACT or any(part in norm for part in _SECRET_KEY_PARTS)


def _scrub_string(value: str) -> str:
    value = _clean_text(value)
    value = _PEM_VALUE.sub("[REDACTED PRIVATE KEY]", value)
    value = _JWT_VALUE.sub("[REDACTED JWT]", value)
    value = _CREDENTIAL_VALUE.sub(lambda m: f"{m.group(1)}.[REDACTED]", value)
    value = _BEARER_VALUE.sub(lambda m: f"{m.group(1)} [REDACTED]", value)
    if len(value) > _DETAIL_STRING_LIMIT:
        value = value[: _DETAIL_STRING_LIMIT - len(_TRUNCATED)] + _TRUNCATED
    return value


def _sanitize(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _scrub_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"  # raw bytes are too often key material to record
    if depth >= _DETAIL_DEPTH_LIMIT:
        return "...(nested too deep)"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = _scrub_string(str(k))[:128]
            if _is_secret_key(key):
                continue
            if len(out) >= _DETAIL_ITEMS_LIMIT:
                out["..."] = "(more keys truncated)"
                break
            out[key] = _sanitize(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        res = [_sanitize(v, depth + 1) for v in items[:_DETAIL_ITEMS_LIMIT]]
        if len(items) > _DETAIL_ITEMS_LIMIT:
            res.append(f"...({len(items) - _DETAIL_ITEMS_LIMIT} more items)")
        return res
    if isinstance(value, datetime):
        return _iso(value)
    return _scrub_string(str(value))


def sanitize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Details as they will be stored: secrets dropped, strings and containers bounded, JSON-safe."""
    if not details:
        return {}
    clean = _sanitize(details, 0)
    assert isinstance(clean, dict)
    size = len(_canonical(clean))
    if size > _DETAILS_TOTAL_LIMIT:
        return {"truncated": True, "original_size": size, "keys": sorted(clean)[:_DETAIL_ITEMS_LIMIT]}
    return clean
