"""The operator dashboard: positions, PnL, signals, risk and orders from the journal, plus the kill switch.

`create_app` lives in `pipelines.dashboard.app` (imports FastAPI); this package stays cheap to import.
"""

from __future__ import annotations

from pipelines.dashboard.settings import DashboardSettings


def demo_info() -> list[str]:
    """Lines for `tradeloom demo`: where the dashboard is and how to start it."""
    settings = DashboardSettings()
    url = f"http://{settings.host}:{settings.port}/"
    controls = ("controls enabled" if settings.controls_enabled else
                "controls disabled until TRADELOOM_DASHBOARD_PASSWORD_HASH (tradeloom dashboard hash-password) or "
                "TRADELOOM_DASHBOARD_TOKEN is set")
    return [
        f"operator dashboard: {url}",
        f"  start it: .loom/venv-ml/bin/tradeloom dashboard --port {settings.port} [--strategy NAME --mode replay]",
        f"  {controls}",
    ]
