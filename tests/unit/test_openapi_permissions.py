"""Default deny: every operation of every API declares the permission it needs."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helixgate import rbac
from helixgate.declaration import SERVICE as CORE
from helixgate.services import ServiceDeclaration
from helixgate.web import snake_case
from helixgate_app.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _operations(service: str) -> list[tuple[str, str, dict]]:
    doc = yaml.safe_load((ROOT / "openapi" / f"{service}.yaml").read_text())
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


@pytest.mark.parametrize("service", ["wes", "trs", "drs", "core"])
def test_every_operation_declares_a_known_permission(service: str) -> None:
    ops = _operations(service)
    assert ops
    missing = [f"{m.upper()} {p}" for m, p, op in ops if op.get("x-helixgate-permission") not in rbac.PERMISSIONS]
    assert missing == []


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_operation_has_a_handler(service: ServiceDeclaration[Any]) -> None:
    module = importlib.import_module(service.handlers)
    missing = [
        op["operationId"]
        for _, _, op in _operations(service.name)
        if not hasattr(module, snake_case(op["operationId"]))
    ]
    assert missing == []


def test_no_role_reaches_admin_by_accident() -> None:
    for role, perms in rbac.ROLE_PERMISSIONS.items():
        if role != "admin":
            assert "admin:users" not in perms, role
    assert not rbac.allows(("viewer",), "admin:users")
    assert not rbac.allows((), "wes:read")


def test_generated_specs_are_up_to_date() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_openapi.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_guard_refuses_an_operation_without_permission(tmp_path: Path) -> None:
    from helixgate.web import GuardedResolver

    class Op:
        operation_id = "GetServiceInfo"
        _operation: dict = {"operationId": "GetServiceInfo"}

    with pytest.raises(RuntimeError, match="x-helixgate-permission"):
        GuardedResolver(CORE, lambda: None).resolve(Op())
