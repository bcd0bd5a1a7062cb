"""The generated DRS document: every operation has a handler, extensions stay under /x-helixgate."""

from __future__ import annotations

from pathlib import Path

import yaml

from drs_store import api
from helixgate.web import snake_case

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _operations() -> list[tuple[str, str, dict]]:
    doc = yaml.safe_load((ROOT / "openapi" / "drs.yaml").read_text())
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def test_every_drs_operation_has_a_handler() -> None:
    missing = [op["operationId"] for _, _, op in _operations() if not hasattr(api, snake_case(op["operationId"]))]
    assert missing == []


def test_extensions_live_under_x_helixgate_and_official_paths_are_complete() -> None:
    ops = _operations()
    for _, path, op in ops:
        assert op.get("x-helixgate-extension", False) == path.startswith("/x-helixgate/"), path
    official = {(m, p) for m, p, op in ops if not op.get("x-helixgate-extension")}
    assert official == {
        ("get", "/service-info"),
        ("options", "/objects/{object_id}"),
        ("get", "/objects/{object_id}"),
        ("post", "/objects/{object_id}"),
        ("options", "/objects"),
        ("post", "/objects"),
        ("get", "/objects/{object_id}/access/{access_id}"),
        ("post", "/objects/{object_id}/access/{access_id}"),
        ("post", "/objects/access"),
    }


def test_only_the_signed_stream_and_service_info_are_public() -> None:
    public = sorted(op["operationId"] for _, _, op in _operations() if op["x-helixgate-permission"] == "public")
    assert public == ["GetServiceInfo", "StreamObject"]
