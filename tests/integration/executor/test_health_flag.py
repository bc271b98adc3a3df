"""Live trading refuses to start without today's green premarket verdict."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from executor.service import ExecutorService
from executor.settings import ExecutorSettings
from tradeloom.errors import ConfigError


def test_health_flag_red_stale_or_missing_refuses_green_today_passes(
    executor_settings: Callable[..., ExecutorSettings], tmp_path: Path
) -> None:
    flag = tmp_path / "premarket.json"
    service = ExecutorService(executor_settings("health", health_flag=flag))
    today = date(2024, 1, 2)
    with pytest.raises(ConfigError, match="unreadable"):
        service.check_health_flag(today)
    flag.write_text(json.dumps({"status": "red", "session_date": "2024-01-02",
                                "checks": {"database": {"ok": True}, "champion": {"ok": False}}}))
    with pytest.raises(ConfigError, match=r"'red'.*\['champion'\]"):
        service.check_health_flag(today)
    flag.write_text(json.dumps({"status": "green", "session_date": "2024-01-01", "checks": {}}))
    with pytest.raises(ConfigError, match="2024-01-01"):
        service.check_health_flag(today)
    flag.write_text(json.dumps({"status": "green", "session_date": "2024-01-02", "checks": {}}))
    service.check_health_flag(today)
    service.close()
