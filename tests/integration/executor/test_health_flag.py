"""Live trading refuses to start without today's green premarket verdict."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from executor.service import ExecutorService
from executor.settings import ExecutorSettings, TradingMode
from tradeloom.adapters.db import Database
from tradeloom.errors import ConfigError

NS = 1_000_000_000


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


def test_a_new_session_without_its_green_verdict_pauses_entries_until_the_flag_turns_green(
    market: Database, executor_settings: Callable[..., ExecutorSettings], tmp_path: Path
) -> None:
    # A service left running overnight must not trade the next session on yesterday's verdict.
    flag = tmp_path / "premarket.json"
    service = ExecutorService(executor_settings("verdict", health_flag=flag, trading_mode=TradingMode.PAPER))
    service.start()
    flag.write_text(json.dumps({"status": "green", "session_date": "2024-01-02", "checks": {}}))
    first = int(datetime(2024, 1, 2, 4, 0, tzinfo=UTC).timestamp()) * NS  # 09:30 IST
    service.check_session_verdict(first)
    assert not service.verdict_missing
    second = first + 86_400 * NS  # the next session; the flag still speaks of the day before
    service.check_session_verdict(second)
    service.live_cycle(second)
    assert service.verdict_missing and service.trader.entries_paused
    flag.write_text(json.dumps({"status": "green", "session_date": "2024-01-03", "checks": {}}))
    service.check_session_verdict(second + 10 * NS)  # looked for again only every 30 s
    assert service.verdict_missing
    service.check_session_verdict(second + 31 * NS)
    service.live_cycle(second + 32 * NS)
    assert not service.verdict_missing and not service.trader.entries_paused
    service.journal.flush()
    with market.transaction() as conn, conn.cursor() as cur:
        cur.execute("select kind, detail->>'session_date' from executor_events where kind like 'premarket_verdict%' "
                    "order by executor_event_id")
        events = cur.fetchall()
    assert events == [("premarket_verdict", "2024-01-02"), ("premarket_verdict_missing", "2024-01-03"),
                      ("premarket_verdict", "2024-01-03")]
    service.close()
