"""Serve the dashboard with uvicorn (one process, one worker: the app holds the login throttle in memory)."""

from __future__ import annotations

import logging

from pipelines.dashboard.settings import DashboardSettings
from tradeloom.adapters.db import Database
from tradeloom.settings import PipelineSettings

log = logging.getLogger(__name__)


def serve(settings: DashboardSettings, database: Database | None = None) -> None:
    import uvicorn

    from pipelines.dashboard.app import create_app

    db = database or Database(PipelineSettings())
    app = create_app(settings, db)
    if settings.host not in {"127.0.0.1", "localhost", "::1"} and not settings.read_requires_login:
        log.warning("dashboard on %s without read_requires_login: anyone who can reach it sees positions",
                    settings.host)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                proxy_headers=False, server_header=False)
