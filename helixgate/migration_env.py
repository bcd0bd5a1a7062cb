"""Shared Alembic environment: each owner (core, drs, trs, wes) migrates only its own
tables (by name prefix) and keeps its own version table."""

from __future__ import annotations

import importlib
from typing import Any

from alembic import context
from sqlalchemy import create_engine

from helixgate.db import Base

OWNERS = {
    "core": ("helixgate.users", "helixgate.audit", "helixgate.installation", "helixgate.service_credentials"),
    "drs": ("drs_store.models",),
    "trs": ("trs_registry.models",),
    "wes": ("wes_server.models",),
}


def run(owner: str) -> None:
    for module in OWNERS[owner]:
        importlib.import_module(module)
    prefix = f"{owner}_"
    config = context.config

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            return bool(name and name.startswith(prefix))
        table = getattr(obj, "table", None)
        return table is None or table.name.startswith(prefix)

    opts: dict[str, Any] = dict(
        target_metadata=Base.metadata,
        include_object=include_object,
        version_table=f"alembic_version_{owner}",
        render_as_batch=True,
        compare_type=True,
    )
    engine = config.attributes.get("connection_engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, **opts)
        with context.begin_transaction():
            context.run_migrations()
