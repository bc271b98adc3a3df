"""`BrokerHistory` (the HistorySource over a broker adapter) and the Parquet spool, with a stub broker
entering through the `BarHistoryBroker` port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tradeloom.adapters.sources import MAX_REQUEST_SPAN, BrokerHistory, read_spool, write_spool
from tradeloom.domain import Instrument, Timeframe
from tradeloom.errors import InputError
from tradeloom.quality import BarColumns

MINUTE_NS = 60 * 10**9


class InclusiveBroker:
    """Answers like Kite: every minute from `start` to `end` *inclusive*; records each request."""

    name = "stub"

    def __init__(self) -> None:
        self.requests: list[tuple[datetime, datetime]] = []

    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime
                        ) -> BarColumns:
        self.requests.append((start, end))
        stamps = np.arange(int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9 + 1, MINUTE_NS)
        prices = 100.0 + (stamps // MINUTE_NS % 50).astype(np.float64)
        return BarColumns(np.full(len(stamps), instrument_key, dtype=object), stamps.astype(np.int64), prices,
                          prices + 1, prices - 1, prices, np.full(len(stamps), 10.0))


INFY = Instrument(exchange="NSE", symbol="INFY", timezone="Asia/Kolkata", kite_token=408065)


def test_broker_history_inclusive_end_bar_excluded_once_per_minute() -> None:
    start = datetime(2024, 1, 2, 3, 45, tzinfo=UTC)
    batch = BrokerHistory(InclusiveBroker()).history(INFY, Timeframe.MINUTE, start, start + timedelta(minutes=30))
    assert len(batch.bars) == 30
    assert batch.bars.bar_at[0] == int(start.timestamp()) * 10**9
    assert batch.bars.bar_at[-1] == int((start + timedelta(minutes=29)).timestamp()) * 10**9
    assert batch.source == "stub:history" and batch.instruments == (INFY,)


def test_broker_history_long_span_chunked_without_duplicates() -> None:
    broker = InclusiveBroker()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    end = start + MAX_REQUEST_SPAN[Timeframe.MINUTE] * 2 + timedelta(hours=1)
    batch = BrokerHistory(broker).history(INFY, Timeframe.MINUTE, start, end)
    assert len(broker.requests) == 3
    assert all(b - a <= MAX_REQUEST_SPAN[Timeframe.MINUTE] for a, b in broker.requests)
    assert broker.requests[0][0] == start and broker.requests[-1][1] == end
    expected = int((end - start).total_seconds() // 60)
    assert len(batch.bars) == expected and len(np.unique(batch.bars.bar_at)) == expected
    assert np.all(np.diff(batch.bars.bar_at) == MINUTE_NS)


def test_broker_history_naive_times_input_error() -> None:
    with pytest.raises(InputError, match="time zone"):
        BrokerHistory(InclusiveBroker()).history(INFY, Timeframe.MINUTE, datetime(2024, 1, 2), datetime(2024, 1, 3))  # noqa: DTZ001


def test_spool_round_trip_same_bars_and_keys(tmp_path: Path) -> None:
    start = datetime(2024, 1, 2, 3, 45, tzinfo=UTC)
    bars = BrokerHistory(InclusiveBroker()).history(INFY, Timeframe.MINUTE, start, start + timedelta(minutes=5)).bars
    path = write_spool(bars, tmp_path / "spool" / "x.parquet")
    batch = read_spool(path, source="kite:history", timeframe=Timeframe.MINUTE)
    assert batch.source == "kite:history" and not (tmp_path / "spool" / "x.part").exists()
    assert list(batch.bars.instrument_key) == ["NSE:INFY"] * 5
    np.testing.assert_array_equal(batch.bars.bar_at, bars.bar_at)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(batch.bars, name), getattr(bars, name))


def test_read_spool_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="spool file not found"):
        read_spool(tmp_path / "nope.parquet", source="kite:history", timeframe=Timeframe.MINUTE)


class DailyKite:
    """Daily candles as Kite stamps them: 00:00 IST of the trading date (18:30 UTC the day before)."""

    name = "stub"

    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime
                        ) -> BarColumns:
        ist_midnights = np.array([int(datetime(2024, 1, day, tzinfo=UTC).timestamp()) - 19_800 for day in (2, 3)],
                                 dtype=np.int64) * 10**9
        ones = np.ones(2)
        return BarColumns(np.full(2, instrument_key, dtype=object), ist_midnights, ones, ones, ones, ones, ones)


def test_daily_bars_land_on_their_trading_date_at_utc_midnight_from_a_broker_and_from_a_file() -> None:
    import polars as pl

    from tradeloom.adapters.sources import frame_to_batch

    want = [int(datetime(2024, 1, day, tzinfo=UTC).timestamp()) * 10**9 for day in (2, 3)]
    batch = BrokerHistory(DailyKite()).history(INFY, Timeframe.DAY, datetime(2024, 1, 1, tzinfo=UTC),
                                               datetime(2024, 1, 5, tzinfo=UTC))
    assert batch.bars.bar_at.tolist() == want
    frame = pl.DataFrame({"bar_at": ["2024-01-02", "2024-01-03", "bad"], "open": ["1"] * 3, "high": ["1"] * 3,
                          "low": ["1"] * 3, "close": ["1"] * 3, "volume": ["1"] * 3})
    read = frame_to_batch(frame, source="t", timeframe=Timeframe.DAY, columns={}, instrument_key="NSE:INFY",
                          symbol_column=None, timezone="Asia/Kolkata", timestamp_format="%Y-%m-%d")
    assert read.bars.bar_at[:2].tolist() == want
    from tradeloom.quality import NAT

    assert read.bars.bar_at[2] == NAT  # still unparseable, for the quarantine
