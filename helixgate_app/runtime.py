"""Process runtime for ``helixgate serve``: the API server and/or the workflow workers,
with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from helixgate.config import Settings
from helixgate_app.services import ROLES, WES, build_platform

log = logging.getLogger("helixgate")


def serve(settings: Settings, service: str, *, workers: int = 2) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if WES in ROLES.get(service, ()):
        from wes_server import jsbox

        # submissions validate CWL expressions in the sandbox: without it, do not serve WES
        jsbox.install(settings)
    platform = build_platform(settings)
    pool: Any = None
    try:
        server: Any = None
        if service != "worker":
            from helixgate_app.server import make_server

            # mount the APIs before any worker leases a run: peers served here are then
            # called in-process from the first run on (a worker's start-up checks take time)
            server = make_server(settings, platform, ROLES[service])
        if service == "worker" or (service == "all" and workers > 0):
            from wes_server.worker import WorkerPool

            pool = WorkerPool(platform, concurrency=workers)
            pool.start()
        if server is None:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            log.info(
                "worker running (%d slots, container scope %s); Ctrl-C to stop",
                workers,
                platform.settings.container_scope,
            )
            stop.wait()
        else:
            log.info(
                "serving %s on %s (container scope %s)",
                ", ".join(s.name for s in ROLES[service]),
                settings.effective_public_url,
                platform.settings.container_scope,
            )
            try:
                server.run()  # handles SIGINT/SIGTERM, then re-raises the signal once shut down
            except KeyboardInterrupt:
                log.info("interrupted: shut down cleanly")
    finally:
        if pool is not None:
            pool.stop()
        platform.close()
    return 0
