"""CEF formatting: field layout and escaping that defeats log injection."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

import helixgate
from helixgate.audit import AuditRecord
from helixgate.cef import cef_line, escape_extension, escape_header, record_to_cef

_KEY = re.compile(r"^[A-Za-z0-9_]+$")
_EXT_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Strict CEF parser: 7 unescaped header fields, then key=value pairs.

    Raises AssertionError on anything a CEF consumer could read as a second event or
    an extra field, so tests can feed it hostile input.
    """
    assert line.splitlines() == [line], f"not exactly one line: {line!r}"
    header: list[str] = []
    buf: list[str] = []
    i = 0
    while len(header) < 7:
        assert i < len(line), "truncated header"
        ch = line[i]
        if ch == "\\":
            nxt = line[i + 1]
            assert nxt in "\\|nr", f"bad header escape \\{nxt}"
            buf.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
            i += 2
            continue
        if ch == "|":
            header.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    ext = line[i:]
    fields: dict[str, str] = {}
    key: str | None = None
    buf = []
    last_space = -1
    j = 0
    while j < len(ext):
        ch = ext[j]
        if ch == "\\":
            nxt = ext[j + 1]
            assert nxt in _EXT_ESCAPES, f"bad extension escape \\{nxt}"
            buf.append(_EXT_ESCAPES[nxt])
            j += 2
            continue
        if ch == "=":
            if key is None:
                new_key, value = "".join(buf), None
            else:
                assert last_space >= 0, f"value of {key} runs into '=' without a key"
                value, new_key = "".join(buf[:last_space]), "".join(buf[last_space + 1 :])
            assert _KEY.match(new_key), f"bad extension key {new_key!r}"
            assert new_key not in fields and new_key != key, f"duplicate field {new_key}"
            if key is not None and value is not None:
                fields[key] = value
            key, buf, last_space = new_key, [], -1
        else:
            if ch == " ":
                last_space = len(buf)
            buf.append(ch)
        j += 1
    if key is not None:
        fields[key] = "".join(buf)
    else:
        assert not buf, "extension text without a key"
    return header, fields


def _record(**overrides: Any) -> AuditRecord:
    values: dict[str, Any] = {
        "seq": 42,
        "time": datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC),
        "category": "security",
        "action": "auth.denied",
        "outcome": "denied",
        "actor": "bob",
        "on_behalf_of": None,
        "service": "drs",
        "target": "obj-1",
        "request_id": "req-1",
        "client_addr": "10.0.0.7",
        "severity": 7,
        "details": {"reason": "needs drs:write"},
        "prev_hash": "a" * 64,
        "hash": "b" * 64,
    }
    values.update(overrides)
    return AuditRecord(**values)


def test_permission_denial_line_has_expected_fields() -> None:
    line = record_to_cef(_record(on_behalf_of="carol"))
    header, ext = parse_cef(line)
    assert header == ["CEF:0", "HelixGate", "helixgate", helixgate.__version__, "auth.denied", "Permission denied", "7"]
    assert ext["rt"] == str(int(datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC).timestamp() * 1000))
    assert ext["suser"] == "bob"
    assert ext["duser"] == "carol"
    assert ext["src"] == "10.0.0.7"
    assert ext["outcome"] == "denied"
    assert (ext["cs1Label"], ext["cs1"]) == ("requestId", "req-1")
    assert (ext["cs2Label"], ext["cs2"]) == ("target", "obj-1")
    assert (ext["cn1Label"], ext["cn1"]) == ("seq", "42")
    assert ext["msg"] == '{"reason":"needs drs:write"}'


def test_absent_values_are_left_out() -> None:
    _, ext = parse_cef(record_to_cef(_record(target=None, request_id=None, client_addr=None, details={})))
    assert not {"duser", "src", "cs1", "cs1Label", "cs2", "cs2Label", "msg"} & set(ext)


def test_non_ip_client_address_goes_to_shost() -> None:
    _, ext = parse_cef(record_to_cef(_record(client_addr="proxy.internal")))
    assert "src" not in ext
    assert ext["shost"] == "proxy.internal"


HOSTILE = [
    "evil\nCEF:0|Fake|fake|1|x|y|10|suser=admin",
    "evil\r\nsuser=admin",
    "a|b|c",
    "x=y suser=admin cs1=forged",
    "trailing backslash\\",
    "\\= escaped already\\|",
    "unicode\u2028line\u2029sep\x85nel\x0bvt\x00nul",
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_injection_in_any_field_yields_one_line_and_no_fake_field(payload: str) -> None:
    rec = _record(
        action=f"auth.denied{payload}",
        actor=payload,
        on_behalf_of=payload,
        target=payload,
        request_id=payload,
        client_addr=payload,
        details={"reason": payload},
    )
    line = record_to_cef(rec)
    header, ext = parse_cef(line)
    assert "\n" not in line and "\r" not in line
    assert len(header) == 7 and header[0] == "CEF:0" and header[6] == "7"
    expected_keys = {"rt", "cat", "act", "suser", "duser", "shost", "outcome", "cs1Label", "cs1", "cs2Label", "cs2",
                     "cs3Label", "cs3", "cn1Label", "cn1", "msg"}
    assert set(ext) == expected_keys
    assert ext["outcome"] == "denied" and ext["cn1"] == "42"
    # CR/LF survive as escapes (round-trip); other line breakers/controls become spaces.
    visible = re.sub("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]", " ", payload)
    for name in ("suser", "duser", "cs1", "cs2"):
        assert ext[name] == visible
    assert header[4] == f"auth.denied{visible}"


def test_escape_functions() -> None:
    assert escape_header("a\\b|c") == "a\\\\b\\|c"
    assert escape_header("x=y") == "x=y"  # '=' needs no escape in the header
    assert escape_extension("a\\b=c|d") == "a\\\\b\\=c|d"  # '|' needs no escape in extensions
    assert escape_extension("l1\nl2\rl3") == "l1\\nl2\\rl3"


def test_severity_outside_cef_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="0..10"):
        cef_line(signature_id="x", name="x", severity=11, extensions=[])
