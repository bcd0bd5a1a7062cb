"""A hostile-input suite generated from the OpenAPI documents the server publishes.

For every operation of every document (WES, TRS, DRS, core) this sends, with a token holding
every human role and anonymously: deeply nested JSON, lone surrogates, huge integers, bad
date-times, malformed JSON, non-UTF-8 bytes and wrong content types, in the body and in every
declared path and query parameter. Nothing may answer 5xx, and every error must have the
service's error shape (WES/DRS ``{msg, status_code}``, TRS ``{code, message}``). Inputs that
break the input limits (depth, strings, integers, JSON syntax) must be refused with a 4xx.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helixgate.config import load_settings
from helixgate.db import Database
from helixgate.web import openapi_dir
from helixgate_app.services import SERVICES, build_platform, migrate_all
from tests.fixtures.app import Harness
from tests.fixtures.services import drop_postgres_database, fresh_postgres_database

pytestmark = pytest.mark.integration

HUMAN_ROLES = ("viewer", "analyst", "tool-developer", "data-steward", "auditor", "admin")
DEPTH = 5000  # far beyond the limit and beyond Python's recursion limit
DEEP_LIST = "[" * DEPTH + "]" * DEPTH
DEEP_OBJECT = '{"a":' * DEPTH + "1" + "}" * DEPTH
HUGE_INT = "9" * 40
BAD_DATETIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-13-45T99:99:99Z", "yesterday")
SURROGATE_URL = "%ED%A0%80"  # the UTF-8 spelling of U+D800: not valid UTF-8
METHODS = ("get", "post", "put", "patch", "delete")
BASE_PATHS = {s.name: s.base_path for s in SERVICES}


# --------------------------------------------------------------------------- the documents
def _resolve(doc: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> Any:
    """Follow a local ``$ref`` (once per chain: the DRS schemas are recursive)."""
    while isinstance(node, dict) and "$ref" in node and node["$ref"] not in seen:
        ref = node["$ref"]
        seen = seen | {ref}
        target: Any = doc
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


@dataclass
class Operation:
    service: str
    method: str
    path: str  # full path, template
    operation_id: str
    path_params: list[str] = field(default_factory=list)
    query: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, schema)
    body_types: list[str] = field(default_factory=list)
    body_schema: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.service}:{self.method.upper()}:{self.operation_id}"


def _operations(service: str, doc: dict[str, Any]) -> Iterator[Operation]:
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            spec = item[method]
            op = Operation(service, method, BASE_PATHS[service] + path, spec.get("operationId", f"{method} {path}"))
            for p in [_resolve(doc, x) for x in [*shared, *spec.get("parameters", [])]]:
                schema = _resolve(doc, p.get("schema", {}))
                if p["in"] == "path":
                    op.path_params.append(p["name"])
                elif p["in"] == "query":
                    op.query.append((p["name"], schema if isinstance(schema, dict) else {}))
            body = _resolve(doc, spec.get("requestBody", {}))
            content = body.get("content", {}) if isinstance(body, dict) else {}
            op.body_types = list(content)
            for media in content.values():
                schema = _resolve(doc, media.get("schema", {}))
                if isinstance(schema, dict) and schema.get("properties"):
                    op.body_schema = schema
                    break
            yield op


def _documents() -> dict[str, dict[str, Any]]:
    return {s: yaml.safe_load((openapi_dir() / f"{s}.yaml").read_text()) for s in BASE_PATHS}


DOCUMENTS = _documents()
OPERATIONS = [op for service, doc in DOCUMENTS.items() for op in _operations(service, doc)]


# --------------------------------------------------------------------------- one app for the module
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One app per database: PostgreSQL refuses what SQLite stores (NUL, lone surrogates, long strings)."""
    tmp: Path = tmp_path_factory.mktemp("hostile-openapi")
    pg: tuple[str, str] | None = None
    if request.param == "postgres":
        pg = fresh_postgres_database(request.getfixturevalue("postgres_url"))
        db = Database(pg[0])
    else:
        db = Database(f"sqlite:///{tmp / 'test.db'}")
    migrate_all(db)
    settings = load_settings(env={}, data_dir=str(tmp / "data"), database_url=db.url)
    h = Harness(build_platform(settings), tuple(BASE_PATHS))
    yield h
    h.client.close()
    h.platform.close()
    db.dispose()
    if pg is not None:
        drop_postgres_database(request.getfixturevalue("postgres_url"), pg[1])


@pytest.fixture(scope="module")
def everyone(app: Harness) -> dict[str, str]:
    """A token with every human role; a tool and a user named ``x`` exist, so probes of
    ``.../tools/x/...`` and ``/users/x`` reach the domain code behind the lookups."""
    headers = app.auth("hostile-root", *HUMAN_ROLES)
    body = {"id": "x", "organization": "o", "name": "x", "toolclass": {"name": "CommandLineTool"}}
    assert app.client.post(f"{BASE_PATHS['trs']}/x-helixgate/tools", headers=headers, json=body).status_code == 201
    app.user("x", "viewer")
    return headers


# --------------------------------------------------------------------------- hostile requests
@dataclass
class Probe:
    label: str
    path: str
    query: str = ""
    body: bytes | None = None
    content_type: str | None = None
    must_refuse: bool = False  # breaks an input limit: a 4xx is the only right answer


def _path(op: Operation, value: str = "x") -> str:
    path = op.path
    for name in op.path_params:
        path = path.replace("{" + name + "}", value)
    return path


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _sample(doc: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """A plausible value for ``schema`` (so a confused leaf gets past the fields around it)."""
    schema = _resolve(doc, schema)
    if not isinstance(schema, dict) or depth > 4:
        return "x"
    for combinator in ("allOf", "oneOf", "anyOf"):
        if schema.get(combinator):
            return _sample(doc, schema[combinator][0], depth + 1)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: _sample(doc, v, depth + 1) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample(doc, schema.get("items", {}), depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True}.get(str(kind), "x")


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        yield from _leaves(value[0], (*path, 0))
    elif path:
        yield path


def _replaced(value: Any, path: tuple[Any, ...], leaf: Any) -> Any:
    if not path:
        return leaf
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = leaf
    return copy


def _nested_confusions(op: Operation) -> Iterator[tuple[str, str]]:
    """Every leaf of a plausible body, nested ones included, replaced by a value of the wrong type."""
    if not op.body_schema:
        return
    sample = _sample(DOCUMENTS[op.service], op.body_schema)
    for path in _leaves(sample):
        if len(path) < 2:
            continue  # top-level fields are confused in _json_variants
        for confused in ({"x": [1]}, [], 1.5, None, -1, "\u0000"):
            label = "/".join(map(str, path))
            yield (
                f"{label}: nested type confusion {json.dumps(confused)}",
                json.dumps(_replaced(sample, path, confused)),
            )


def _json_variants(op: Operation) -> Iterator[tuple[str, str]]:
    """(label, JSON text) bodies that break the limits, generic and per declared property."""
    yield "deep list", DEEP_LIST
    yield "deep object", DEEP_OBJECT
    yield "lone surrogate", '{"name": "\\ud800", "\\udfff": 1}'
    yield "huge integer", '{"n": 1' + "0" * 40 + "}"
    yield "malformed", '{"name": '
    for name, schema in (op.body_schema.get("properties") or {}).items():
        schema = schema if isinstance(schema, dict) else {}
        yield f"{name}: deep", json.dumps({name: 1})[:-2] + DEEP_LIST + "}"
        yield f"{name}: surrogate", '{"' + name + '": "a\\ud800b"}'
        yield f"{name}: surrogate in list", '{"' + name + '": ["\\udc00"]}'
        yield f"{name}: huge integer", '{"' + name + '": ' + HUGE_INT + "}"
        for confused in ('{"x": [1]}', "[]", "1.5", "true", "null", '"text"', "-1"):
            yield f"{name}: type confusion {confused}", '{"' + name + '": ' + confused + "}"
        if schema.get("format") == "date-time":
            for bad in BAD_DATETIMES:
                yield f"{name}: datetime {bad}", json.dumps({name: bad})  # may be accepted as text: no 5xx
    yield from _nested_confusions(op)


def _probes(op: Operation) -> Iterator[Probe]:
    base = _path(op)
    # path parameters: invalid UTF-8 (a surrogate), huge integers, NUL
    if op.path_params:
        yield Probe("path surrogate", _path(op, SURROGATE_URL), must_refuse=True)
        yield Probe("path huge integer", _path(op, HUGE_INT))
        yield Probe("path NUL", _path(op, "a%00b"), must_refuse=True)
    # query parameters, each declared one in turn
    for name, schema in op.query:
        kind = schema.get("type")
        yield Probe(f"query {name} surrogate", base, f"{name}={SURROGATE_URL}", must_refuse=True)
        yield Probe(f"query {name} huge integer", base, f"{name}={HUGE_INT}", must_refuse=kind == "integer")
        yield Probe(f"query {name} negative huge", base, f"{name}=-{HUGE_INT}", must_refuse=kind == "integer")
        yield Probe(f"query {name} type confusion", base, f"{name}=%7B%22a%22%3A1%7D")
        yield Probe(f"query {name} deep JSON", base, f"{name}=" + "%5B" * 4000 + "%5D" * 4000)
        if "token" in name:
            for raw in ("s" + HUGE_INT, "o" + HUGE_INT, "n" + HUGE_INT, "s-1"):
                yield Probe(f"query {name} token {raw[:3]}", base, f"{name}={_b64(raw)}")
        if schema.get("format") == "date-time" or name in ("since", "until"):
            for bad in BAD_DATETIMES:
                yield Probe(f"query {name} datetime {bad}", base, f"{name}={bad.replace('+', '%2B')}", must_refuse=True)
    # bodies: every operation that takes one, whatever it declares
    if op.method in ("post", "put", "patch") or op.body_types:
        for label, text in _json_variants(op):
            refuse = "datetime" not in label and "type confusion" not in label
            yield Probe(
                f"json {label}", base, body=text.encode("utf-8"), content_type="application/json", must_refuse=refuse
            )
        yield Probe(
            "json not UTF-8", base, body=b'{"name": "\xff\xfe"}', content_type="application/json", must_refuse=True
        )
        yield Probe("text/plain", base, body=b"hello", content_type="text/plain")
        yield Probe(
            "urlencoded form", base, body=b"a=%ED%A0%80&b=%00", content_type="application/x-www-form-urlencoded"
        )
        yield Probe(
            "garbage multipart",
            base,
            body=b"--b\r\nContent-Disposition: form-data\r\n\r\nx",
            content_type="multipart/form-data; boundary=b",
        )
        yield Probe("xml", base, body=b"<a/>", content_type="application/xml")
        yield Probe("no content type", base, body=b'{"a": 1}', content_type=None)
        yield Probe("multipart without boundary", base, body=b"x", content_type="multipart/form-data", must_refuse=True)
        if "multipart/form-data" in op.body_types:
            form = {"workflow_url": "wf.cwl", "workflow_type": "CWL", "workflow_engine_version": "1\x00"}
            yield Probe(
                "multipart NUL in a text field",
                base,
                body=_multipart(form),
                content_type=f"multipart/form-data; boundary={BOUNDARY}",
                must_refuse=True,
            )
            for field_name in ("workflow_params", "tags", "workflow_engine_parameters"):
                for label, text in (
                    ("deep", DEEP_OBJECT),
                    ("surrogate", '{"k": "\\ud800"}'),
                    ("huge integer", '{"k": ' + HUGE_INT + "}"),
                    ("malformed", "{"),
                ):
                    form = {
                        "workflow_url": "wf.cwl",
                        "workflow_type": "CWL",
                        "workflow_type_version": "v1.2",
                        field_name: text,
                    }
                    yield Probe(
                        f"multipart {field_name} {label}",
                        base,
                        body=_multipart(form),
                        content_type=f"multipart/form-data; boundary={BOUNDARY}",
                        must_refuse=True,
                    )


BOUNDARY = "hostileboundary42"


def _multipart(fields: dict[str, str]) -> bytes:
    out = b""
    for name, value in fields.items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()
        out += b"\r\n"
    out += b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="workflow_attachment"; '
    out += b'filename="wf.cwl"\r\n\r\ncwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [echo]\ninputs: []\n'
    out += b"outputs: []\n\r\n--" + BOUNDARY.encode() + b"--\r\n"
    return out


def _check_shape(service: str, status: int, body: Any, where: str) -> None:
    assert isinstance(body, dict), where
    if service == "trs":
        assert body.get("code") == status and isinstance(body.get("message"), str), where
    else:
        assert body.get("status_code") == status and isinstance(body.get("msg"), str), where


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.id for op in OPERATIONS])
def test_hostile_input_never_answers_5xx_and_errors_have_the_spec_shape(
    app: Harness, everyone: dict[str, str], op: Operation
) -> None:
    probes = list(_probes(op))
    for who, headers in (("everyone", everyone), ("anonymous", {})):
        for probe in probes:
            h = dict(headers)
            if probe.content_type:
                h["Content-Type"] = probe.content_type
            url = probe.path + (f"?{probe.query}" if probe.query else "")
            r = app.client.request(op.method.upper(), url, headers=h, content=probe.body)
            where = f"{op.id} [{probe.label}] as {who}: {r.status_code} {r.text[:300]}"
            assert r.status_code < 500, where
            if probe.must_refuse:
                assert 400 <= r.status_code < 500, where
            if r.status_code >= 400:
                _check_shape(op.service, r.status_code, r.json(), where)


def test_the_suite_covers_every_operation_of_every_served_document(app: Harness) -> None:
    """The table above is the served documents' own list, and all four serve as JSON and YAML."""
    for service, base in BASE_PATHS.items():
        r = app.client.get(f"{base}/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), (service, r.text)
        as_json = r.json()
        r = app.client.get(f"{base}/openapi.yaml")
        assert r.status_code == 200, (service, r.text)
        assert yaml.safe_load(r.text)["paths"] == as_json["paths"]
        assert as_json["servers"] == [{"url": app.platform.settings.effective_public_url + base}]
        assert len(as_json["paths"]) == len(DOCUMENTS[service]["paths"])
    assert {op.service for op in OPERATIONS} == set(BASE_PATHS)
    assert len(OPERATIONS) == sum(
        1 for doc in DOCUMENTS.values() for item in doc["paths"].values() for m in item if m in METHODS
    )
    assert len(OPERATIONS) >= 60
