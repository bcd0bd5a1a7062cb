"""openapi/{wes,trs,drs}.yaml carry every element of the official GA4GH documents, unchanged.

Both documents are fully dereferenced and compared element by element. Allowed differences:
``servers``; ``x-helixgate-*`` keys; operations and parameters marked
``x-helixgate-extension: true``; components and tags added by the extension files (which may
not shadow official ones); and the documented fixes of scripts/build_openapi.py ``_fix``, which
are themselves pinned here (FIXES) so a new "fix" cannot slip in unreviewed. The official
documents are found by scripts/fetch_ga4gh_specs.py (HELIXGATE_GA4GH_SPECS or its cache, SHA-256 checked).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.fixtures.ga4gh_schemas import dereference, specs_dir

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("wes", "trs", "drs")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
EXPECTED_VERSIONS = {"wes": "1.1.0", "trs": "2.0.1", "drs": "1.5.0"}
# The complete list of differences _fix may introduce (path in the dereferenced document -> new value).
RELATIVE_PATH_OP = ("paths", "/tools/{id}/versions/{version_id}/{type}/descriptor/{relative_path}", "get")
FIXES: dict[str, dict[tuple[Any, ...], Any]] = {
    "wes": {},
    "trs": {(*RELATIVE_PATH_OP, "parameters", 3, "schema", "format"): "path"},
    "drs": {},
}
EXTENSION_COMPONENT_PREFIXES = ("HelixGate", "Hg")
_MISSING = object()


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_openapi", ROOT / "scripts" / "build_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_openapi", module)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


def official(service: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((specs_dir() / builder.SOURCES[service]).read_text())
    return doc


def generated(service: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "openapi" / f"{service}.yaml").read_text())
    return doc


def fixed_official(service: str) -> dict[str, Any]:
    doc = copy.deepcopy(official(service))
    builder._fix(service, doc)
    return doc


# --------------------------------------------------------------------------- comparison
def _strip_helixgate(node: Any) -> Any:
    """Drop x-helixgate-* keys and extension parameters (everything HelixGate may add inside
    an official element)."""
    if isinstance(node, list):
        return [_strip_helixgate(n) for n in node if not (isinstance(n, dict) and n.get("x-helixgate-extension"))]
    if isinstance(node, dict):
        return {k: _strip_helixgate(v) for k, v in node.items() if not str(k).startswith("x-helixgate")}
    return node


def diff(expected: Any, actual: Any, where: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any, Any]]:
    """Every difference between two JSON-like trees as (path, expected, actual)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected.keys() | actual.keys():
            out += diff(expected.get(key, _MISSING), actual.get(key, _MISSING), (*where, key))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in diff(e, a, (*where, i))]
    if type(expected) is not type(actual) or expected != actual:
        return [(where, expected, actual)]
    return []


def compare(official_doc: dict[str, Any], generated_doc: dict[str, Any]) -> list[str]:
    """Human-readable violations of "every official element is present and unchanged"."""
    ref = dereference(official_doc)
    gen = dereference(generated_doc)
    problems: list[str] = []

    def report(prefix: tuple[Any, ...], expected: Any, actual: Any) -> None:
        for where, e, a in diff(expected, _strip_helixgate(actual), prefix):
            path = "/".join(map(str, where))
            if a is _MISSING:
                problems.append(f"missing {path}")
            elif e is _MISSING:
                problems.append(f"added {path} = {str(a)[:120]} (not marked x-helixgate)")
            else:
                problems.append(f"changed {path}: {str(e)[:120]} -> {str(a)[:120]}")

    for key in ref.keys() | gen.keys():
        if key in ("servers", "paths", "components", "tags") or str(key).startswith("x-helixgate"):
            continue
        report((key,), ref.get(key, _MISSING), gen.get(key, _MISSING))
    gen_paths = gen.get("paths", {})
    for template, item in ref.get("paths", {}).items():
        if template not in gen_paths:
            problems.append(f"missing paths/{template}")
            continue
        report(("paths", template), item, gen_paths[template])
    for template, item in gen_paths.items():
        if template in ref.get("paths", {}):
            continue
        for method in METHODS:
            if method in item and item[method].get("x-helixgate-extension") is not True:
                problems.append(f"added paths/{template}/{method} without x-helixgate-extension: true")
    gen_components = gen.get("components", {})
    for section, entries in ref.get("components", {}).items():
        for name, value in entries.items():
            report(("components", section, name), value, gen_components.get(section, {}).get(name, _MISSING))
        for name in gen_components.get(section, {}).keys() - entries.keys():
            if not name.startswith(EXTENSION_COMPONENT_PREFIXES):
                problems.append(f"added components/{section}/{name} without a HelixGate prefix")
    ref_tags = ref.get("tags", [])
    gen_tags = gen.get("tags", [])
    if gen_tags[: len(ref_tags)] != ref_tags:
        report(("tags",), ref_tags, gen_tags[: len(ref_tags)])
    for tag in gen_tags[len(ref_tags) :]:
        if not str(tag.get("name", "")).startswith("x-helixgate"):
            problems.append(f"added tag {tag.get('name')!r} (extension tags are named x-helixgate...)")
    return problems


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("service", SERVICES)
def test_official_document_is_the_expected_release(service: str) -> None:
    assert str(official(service)["info"]["version"]) == EXPECTED_VERSIONS[service]


@pytest.mark.parametrize("service", SERVICES)
def test_generated_file_is_up_to_date(service: str) -> None:
    expected = builder.render(service, builder.build(service, specs_dir()))
    assert (ROOT / "openapi" / f"{service}.yaml").read_text() == expected, (
        f"openapi/{service}.yaml is stale: run .venv/bin/python scripts/build_openapi.py"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_official_element_is_present_and_unchanged(service: str) -> None:
    problems = compare(fixed_official(service), generated(service))
    assert not problems, f"openapi/{service}.yaml deviates from GA4GH {service}:\n" + "\n".join(problems[:50])


@pytest.mark.parametrize("service", SERVICES)
def test_documented_fixes_are_exactly_the_pinned_ones(service: str) -> None:
    changes = {where: a for where, e, a in diff(dereference(official(service)), dereference(fixed_official(service)))}
    assert changes == FIXES[service]


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_declares_a_permission_and_extensions_are_marked(service: str) -> None:
    ref_paths = official(service)["paths"]
    for template, item in generated(service)["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            assert op.get("operationId"), f"{method.upper()} {template} has no operationId"
            assert op.get("x-helixgate-permission"), f"{method.upper()} {template} declares no permission"
            official_op = ref_paths.get(template, {}).get(method)
            assert (official_op is None) == (op.get("x-helixgate-extension") is True), (
                f"{method.upper()} {template}: x-helixgate-extension must be set exactly on extension operations"
            )
            if official_op is not None:
                names = {(p.get("name"), p.get("in")) for p in official_op.get("parameters", []) if "name" in p}
                for p in op.get("parameters", []):
                    if "name" in p and (p["name"], p["in"]) not in names:
                        assert p.get("x-helixgate-extension") is True, f"{op['operationId']}: {p['name']} unmarked"


def _segments(template: str) -> list[str]:
    return [s for s in template.split("/") if s]


def could_collide(a: str, b: str) -> bool:
    """True when some concrete path matches both templates ({x} = one segment, except
    relative_path-style multi-segment parameters, treated as matching the rest)."""
    sa, sb = _segments(a), _segments(b)
    for i in range(max(len(sa), len(sb))):
        x = sa[i] if i < len(sa) else None
        y = sb[i] if i < len(sb) else None
        if x is None or y is None:
            return False
        x_param, y_param = x.startswith("{"), y.startswith("{")
        if x in ("{relative_path}",) or y in ("{relative_path}",):
            return True
        if not x_param and not y_param and x != y:
            return False
    return True


@pytest.mark.parametrize("service", SERVICES)
def test_extension_paths_cannot_collide_with_ga4gh_routes(service: str) -> None:
    ref_paths = official(service)["paths"]
    for template, item in generated(service)["paths"].items():
        if template in ref_paths:
            continue
        methods = {m for m in METHODS if m in item}
        for ga4gh, ga4gh_item in ref_paths.items():
            shared = methods & {m for m in METHODS if m in ga4gh_item}
            assert not (shared and could_collide(template, ga4gh)), (
                f"extension {template} can shadow GA4GH {ga4gh} ({', '.join(sorted(shared))})"
            )


# --------------------------------------------------------------------------- the comparator itself
def _first_op(doc: dict[str, Any]) -> dict[str, Any]:
    for item in doc["paths"].values():
        for method in METHODS:
            if method in item and item[method].get("parameters"):
                op: dict[str, Any] = item[method]
                return op
    raise AssertionError("no operation with parameters")


@pytest.mark.parametrize("service", SERVICES)
def test_comparator_catches_missing_and_changed_elements(service: str) -> None:
    base = fixed_official(service)
    mutations = {
        "removed path": lambda d: d["paths"].pop(next(iter(d["paths"]))),
        "removed parameter": lambda d: _first_op(d)["parameters"].pop(),
        "required flipped": lambda d: _first_op(d)["parameters"][0].update(required=False),
        "removed schema": lambda d: d["components"]["schemas"].pop(next(iter(d["components"]["schemas"]))),
        "unmarked added parameter": lambda d: _first_op(d)["parameters"].append(
            {"name": "extra", "in": "query", "schema": {"type": "string"}}
        ),
        "schema property type": lambda d: next(
            s for s in d["components"]["schemas"].values() if s.get("properties")
        )["properties"].update({"__probe": {"type": "integer"}}),
        "info changed": lambda d: d["info"].update(version="0.0.0"),
    }
    assert compare(base, copy.deepcopy(base)) == []
    for name, mutate in mutations.items():
        changed = copy.deepcopy(base)
        mutate(changed)
        assert compare(base, changed), f"{service}: comparator missed mutation '{name}'"


def test_comparator_allows_marked_extensions_and_follows_refs() -> None:
    base: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {"/a": {"get": {"operationId": "A", "parameters": [{"$ref": "#/components/parameters/P"}]}}},
        "components": {"parameters": {"P": {"name": "p", "in": "query", "schema": {"type": "string"}}}},
    }
    ours = copy.deepcopy(base)
    ours["servers"] = [{"url": "/base"}]
    ours["paths"]["/a"]["get"]["x-helixgate-permission"] = "public"
    ours["paths"]["/a"]["get"]["parameters"].append({"name": "q", "in": "query", "x-helixgate-extension": True})
    ours["paths"]["/x-helixgate/b"] = {"post": {"operationId": "B", "x-helixgate-extension": True}}
    ours["components"]["schemas"] = {"HelixGateThing": {"type": "object"}}
    # inlining a $ref target is not a change; changing the referenced component is
    ours["paths"]["/a"]["get"]["parameters"][0] = {"name": "p", "in": "query", "schema": {"type": "string"}}
    assert compare(base, ours) == []
    ours["components"]["parameters"]["P"]["schema"] = {"type": "integer"}
    assert any(re.match(r"changed components/parameters/P/schema/type", p) for p in compare(base, ours))


def test_collision_rule() -> None:
    assert could_collide("/objects/{object_id}", "/objects/x-helixgate")
    descriptor = "/tools/{id}/versions/{v}/{type}/descriptor/{relative_path}"
    assert could_collide(descriptor, "/tools/a/versions/b/c/descriptor/d/e")
    assert not could_collide("/x-helixgate/objects", "/objects/{object_id}")
    assert not could_collide("/api/ga4gh/v2/tools/{id}", "/tools/{id}")
