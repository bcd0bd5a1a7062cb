"""The input-limits layer and the URI parser as plain functions."""

from __future__ import annotations

import ipaddress
from datetime import timezone

import pytest

from helixgate.errors import BadRequest
from helixgate.limits import MAX_JSON_DEPTH, json_depth, loads, parse_datetime
from helixgate.uris import parse_drs, scheme_of
from helixgate.web import _client_from_forwarded


def test_depth_is_measured_without_recursion_and_ignores_brackets_in_strings() -> None:
    assert json_depth("[" * 100_000 + "]" * 100_000) == 100_000
    assert json_depth('{"a": "[[[[{{{{", "b": "\\"[["}') == 1
    assert json_depth("1") == 0


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
        ('{"a": "\\ud800"}', "surrogate"),
        ('{"\\udfff": 1}', "surrogate"),
        ('["\\u0000"]', "NUL"),
        ("[1" + "0" * 30 + "]", "between"),
        ('{"a": NaN}', "not acceptable"),
        ('{"a": ', "not valid JSON"),
        (b'{"a": "\xff"}', "UTF-8"),
    ],
)
def test_hostile_json_is_a_bad_request(text: str | bytes, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        loads(text)


def test_json_within_the_limits_parses() -> None:
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads(nested) is not None
    assert loads('{"a": [1, 2.5, "é", null, true, 9223372036854775807]}')["a"][-1] == 2**63 - 1


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-02-30", "x\ud800"])
def test_out_of_range_or_invalid_datetimes_are_bad_requests(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_datetime(value, "since")


def test_datetimes_are_utc() -> None:
    assert parse_datetime("2026-01-01T02:00:00+02:00", "since").isoformat() == "2026-01-01T00:00:00+00:00"
    assert parse_datetime("2026-01-01T00:00:00", "since").tzinfo == timezone.utc


def test_scheme_is_case_insensitive_and_drs_host_canonical() -> None:
    assert scheme_of("DRS://x/y") == "drs" and scheme_of("no scheme") is None and scheme_of("1http://x") is None
    ref = parse_drs("Drs://Example.ORG:8080/abc")
    assert ref is not None and ref.uri == "drs://example.org:8080/abc"
    assert parse_drs("https://example.org/abc") is None
    with pytest.raises(BadRequest, match="whitespace"):
        parse_drs("\x0bdrs://h/abc")


def test_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    assert _client_from_forwarded("198.51.100.1, 203.0.113.9, 10.1.2.3", proxies) == "203.0.113.9"
    assert _client_from_forwarded("10.0.0.1, 10.0.0.2", proxies) == "10.0.0.1"
    assert _client_from_forwarded("203.0.113.9, not-an-ip", proxies) is None


def test_the_worker_reads_any_spelling_as_the_canonical_reference() -> None:
    from helixgate.errors import IntegrityError
    from wes_server.executor import parse_drs_reference

    ref = parse_drs_reference("DRS://H:1/abc")
    assert ref is not None and ref.uri == "drs://h:1/abc"
    assert parse_drs_reference("file:///x") is None
    with pytest.raises(IntegrityError):
        parse_drs_reference(" drs://h:1/abc")


def test_escaped_quotes_and_unterminated_strings_do_not_hide_brackets() -> None:
    assert json_depth("[" * 70 + '"' + '\\"' * 1000) == 70  # an unterminated string ends the scan
    assert json_depth('["\\\\", ["\\"]"]]') == 2
