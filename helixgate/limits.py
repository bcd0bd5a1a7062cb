"""Input limits shared by every API: JSON depth, string validity, integer ranges, datetimes.

Python's ``json`` recurses once per nesting level (deep input raises ``RecursionError``),
accepts ``\\ud800`` escapes as lone surrogates (which no database or encoder accepts) and
integers of any size. Every untrusted JSON document goes through :func:`loads` (request
bodies in :class:`helixgate.web.BodySanityMiddleware` before connexion parses them,
JSON-valued form fields and DRS provenance in the domain code); raw paths and query strings,
form fields and the parameters connexion converted go through :func:`check_text` and
:func:`bounded_int` (``helixgate.web``); every user-supplied instant through
:func:`parse_datetime`.
Violations raise :class:`~helixgate.errors.BadRequest` (a 4xx in the API's error shape).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from helixgate.errors import BadRequest

MAX_JSON_DEPTH = 64
#: integers must fit a signed 64-bit column (what every database and page token can hold)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPECIAL = re.compile(rb'["\\\[\]{}]')


def json_depth(text: str | bytes) -> int:
    """Maximum nesting depth of a JSON text, in one linear pass without recursion: only quotes,
    backslashes and brackets are visited (brackets inside strings do not count)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    in_string = False
    skip_to = 0  # the character after a backslash is escaped
    for m in _SPECIAL.finditer(data):
        at = m.start()
        if at < skip_to:
            continue
        char = data[at]
        if in_string:
            if char == 0x5C:
                skip_to = at + 2
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif char in (0x5D, 0x7D):
            depth -= 1
    return deepest


def check_text(value: str, what: str) -> str:
    """Refuse lone surrogates (invalid Unicode) and NUL/control characters in a string."""
    if _SURROGATE.search(value):
        raise BadRequest(f"{what} contains invalid Unicode (a lone surrogate)")
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character")
    return value


def bounded_int(value: int, what: str, lo: int = INT_MIN, hi: int = INT_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{what} must be an integer between {lo} and {hi}")
    return value


def check_value(value: Any, what: str) -> None:
    """Walk a parsed JSON value (iteratively): valid strings (keys too), 64-bit integers, finite numbers."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            bounded_int(item, f"an integer in {what}")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise BadRequest(f"{what} contains a non-finite number")
        elif isinstance(item, dict):
            for k, v in item.items():
                check_text(k, what)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: str | bytes, what: str = "request body", *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse untrusted JSON within the limits above, or raise BadRequest."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{what} is not valid UTF-8") from None
    if raw.count("[") + raw.count("{") > max_depth and json_depth(raw) > max_depth:
        raise BadRequest(f"{what} is nested deeper than {max_depth} levels")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, integers beyond the digit limit
        raise BadRequest(f"{what} is not acceptable JSON: {str(exc)[:120]}") from None
    check_value(value, what)
    return value


def parse_datetime(value: str, what: str) -> datetime:
    """An ISO 8601 instant as an aware UTC datetime; naive values are UTC. Out of range -> 400."""
    check_text(value, what)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(f"{what} must be an ISO 8601 date-time within years 1-9999 UTC") from None
