"""The dashboard's kill and pause buttons write the files the executor watches, however the executor's home
is set (the systemd unit sets TRADELOOM_EXECUTOR_HOME only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor.settings import ExecutorSettings
from pipelines.dashboard.settings import DashboardSettings


def test_dashboard_control_files_are_the_executors_under_the_systemd_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TRADELOOM_HOME", "TRADELOOM_DASHBOARD_HOME", "TRADELOOM_EXECUTOR_STATE_ROOT",
                 "TRADELOOM_EXECUTOR_KILL_SWITCH_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRADELOOM_EXECUTOR_HOME", str(tmp_path / "var-lib-tradeloom"))
    monkeypatch.chdir(tmp_path)  # no .env file of the checkout
    executor = ExecutorSettings()
    dashboard = DashboardSettings()
    strategy = executor.engine.strategy
    assert dashboard.kill_switch_path(strategy) == executor.kill_switch_path()
    assert dashboard.pause_path(strategy) == executor.state_dir / "PAUSE"
    assert str(executor.kill_switch_path()).startswith(str(tmp_path / "var-lib-tradeloom"))
