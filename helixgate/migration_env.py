"""Shared Alembic environment: each service (the core included) migrates only its own
tables (by name prefix) and keeps its own version table; its declaration names the modules
that define them."""

from __future__ import annotations

import importlib
from typing import Any

from alembic import context
from sqlalchemy import create_engine

from helixgate.db import Base
from helixgate.services import ServiceDeclaration


def run(service: ServiceDeclaration[Any]) -> None:
    for module in service.models:
        importlib.import_module(module)
    prefix = service.table_prefix
    config = context.config

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            return bool(name and name.startswith(prefix))
        table = getattr(obj, "table", None)
        return table is None or table.name.startswith(prefix)

    opts: dict[str, Any] = dict(
        target_metadata=Base.metadata,
        include_object=include_object,
        version_table=f"alembic_version_{service.name}",
        render_as_batch=True,
        compare_type=True,
    )
    engine = config.attributes.get("connection_engine") or create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, **opts)
        with context.begin_transaction():
            context.run_migrations()
