#!/usr/bin/env python3
"""Autogenerate an Alembic revision for one owner's tables against a scratch SQLite database.

python scripts/new_migration.py drs "add quarantine columns"
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from helixgate.db import Database
from helixgate_app.services import migrate_all, named


def main() -> None:
    owner, message = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        migrate_all(db)  # bring the scratch database to head first
        (service,) = named([owner])
        root = Path(__file__).resolve().parents[1] / str(service.migrations).replace(".", "/")
        cfg = Config()
        cfg.set_main_option("script_location", str(root))
        cfg.set_main_option("sqlalchemy.url", db.url)
        cfg.attributes["connection_engine"] = db.engine
        command.revision(cfg, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
