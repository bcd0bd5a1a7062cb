#!/usr/bin/env python3
"""Build openapi/{wes,trs,drs}.yaml from the official GA4GH bundled documents.

Each output is the official document, unchanged except for: the server URL (the base
path), an ``x-helixgate-permission`` on every operation, the few spec fixes listed in
docs/compatibility.md, and the HelixGate extension paths/schemas from
openapi/extensions/<service>.yaml (each operation there tagged ``x-helixgate-extension``).

    python scripts/build_openapi.py [--specs DIR] [--check]

The official documents come from scripts/fetch_ga4gh_specs.py (``HELIXGATE_GA4GH_SPECS`` or its
cache), each checked against its pinned SHA-256; ``--specs`` names another directory, checked
the same way.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fetch_ga4gh_specs as pinned  # noqa: E402  (a sibling script: the pinned documents and their resolver)

SOURCES = {
    "wes": "wes/workflow_execution_service.bundled.openapi.yaml",
    "trs": "trs/openapi.bundled.yaml",
    "drs": "drs/data_repository_service.bundled.openapi.yaml",
}
BASE_PATHS = {"wes": "/ga4gh/wes/v1", "trs": "/ga4gh/trs/v2", "drs": "/ga4gh/drs/v1"}

PERMISSIONS = {
    "wes": {
        "GetServiceInfo": "public",
        "ListRuns": "wes:read",
        "RunWorkflow": "wes:submit",
        "GetRunLog": "wes:read",
        "GetRunStatus": "wes:read",
        "ListTasks": "wes:read",
        "GetTask": "wes:read",
        "CancelRun": "wes:cancel",
    },
    "trs": {
        "getServiceInfo": "public",
        "toolsIdGet": "trs:read",
        "toolsIdVersionsGet": "trs:read",
        "toolsIdVersionsVersionIdGet": "trs:read",
        "toolsGet": "trs:read",
        "toolsIdVersionsVersionIdTypeDescriptorGet": "trs:read",
        "toolsIdVersionsVersionIdTypeDescriptorRelativePathGet": "trs:read",
        "toolsIdVersionsVersionIdTypeTestsGet": "trs:read",
        "toolsIdVersionsVersionIdTypeFilesGet": "trs:read",
        "toolsIdVersionsVersionIdContainerfileGet": "trs:read",
        "toolClassesGet": "trs:read",
    },
    "drs": {
        "GetServiceInfo": "public",
        "OptionsObject": "drs:read",
        "GetObject": "drs:read",
        "PostObject": "drs:read",
        "OptionsBulkObject": "drs:read",
        "GetBulkObjects": "drs:read",
        "GetAccessURL": "drs:read",
        "PostAccessURL": "drs:read",
        "GetBulkAccessURL": "drs:read",
    },
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _fix(service: str, doc: dict[str, Any]) -> None:
    """Spec fixes that do not change the contract (see docs/compatibility.md)."""
    if service == "trs":
        op = doc["paths"]["/tools/{id}/versions/{version_id}/{type}/descriptor/{relative_path}"]["get"]
        for p in op["parameters"]:
            if isinstance(p, dict) and p.get("name") == "relative_path":
                # nested paths (a/b.cwl) must route
                p["schema"]["format"] = "path"


def build(service: str, specs_dir: Path) -> dict[str, Any]:
    official = yaml.safe_load((specs_dir / SOURCES[service]).read_text())
    doc = copy.deepcopy(official)
    doc["servers"] = [{"url": BASE_PATHS[service]}]
    perms = PERMISSIONS[service]
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            op_id = op["operationId"]
            if op_id not in perms:
                raise SystemExit(f"{service}: {method.upper()} {path} ({op_id}) has no permission mapping")
            op["x-helixgate-permission"] = perms[op_id]
    _fix(service, doc)
    ext_file = ROOT / "openapi" / "extensions" / f"{service}.yaml"
    if ext_file.exists():
        ext = yaml.safe_load(ext_file.read_text()) or {}
        for path, item in (ext.get("paths") or {}).items():
            if path in doc["paths"]:
                raise SystemExit(f"{service}: extension path {path} collides with a GA4GH path")
            for method in METHODS:
                if method in item:
                    item[method]["x-helixgate-extension"] = True
            doc["paths"][path] = item
        by_id = {
            op["operationId"]: op for item in doc["paths"].values() for m, op in item.items() if m in METHODS
        }
        for op_id, params in (ext.get("x-operation-parameters") or {}).items():
            op = by_id[op_id]
            known = {p.get("name") for p in op.get("parameters", []) if isinstance(p, dict)}
            for param in params:
                if param["name"] in known:
                    raise SystemExit(f"{service}: extension parameter {param['name']} collides on {op_id}")
                op.setdefault("parameters", []).append({**param, "x-helixgate-extension": True})
        for section, entries in (ext.get("components") or {}).items():
            target = doc.setdefault("components", {}).setdefault(section, {})
            for name, value in entries.items():
                if name in target:
                    raise SystemExit(f"{service}: extension component {section}/{name} collides with GA4GH")
                target[name] = value
        if ext.get("tags"):
            doc.setdefault("tags", []).extend(ext["tags"])
    return doc


def render(service: str, doc: dict[str, Any]) -> str:
    header = (
        f"# GENERATED by scripts/build_openapi.py from the official GA4GH document ({SOURCES[service]})\n"
        f"# plus openapi/extensions/{service}.yaml. Do not edit: edit the extension file and rebuild.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", help=f"official documents (default: {pinned.ENV_DIR} or the fetch cache)")
    parser.add_argument("--check", action="store_true", help="fail if a generated file is out of date")
    args = parser.parse_args()
    if args.specs:
        os.environ[pinned.ENV_DIR] = args.specs
    try:
        specs = pinned.resolve()
    except pinned.SpecError as exc:
        print(f"build_openapi: error: {exc}", file=sys.stderr)
        return 1
    stale = []
    for service in SOURCES:
        text = render(service, build(service, specs))
        out = ROOT / "openapi" / f"{service}.yaml"
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(str(out))
        else:
            out.write_text(text)
    if stale:
        print("out of date (run scripts/build_openapi.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
