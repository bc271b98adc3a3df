"""Seeded synthetic minute bars (labelled synthetic): regimes, overnight gaps, a U-shaped volume profile.

No real minute data ships in any registry package, so intraday tests and benchmarks use these.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np

from tradeloom.domain import Instrument, Segment
from tradeloom.quality import BarColumns

NSE_TZ = ZoneInfo("Asia/Kolkata")
SESSION_OPEN = time(9, 15)
BARS_PER_DAY = 375  # 09:15 to 15:30 IST


def synthetic_instruments(count: int) -> list[Instrument]:
    return [
        Instrument(
            exchange="SYNTH", symbol=f"SYN{index:03d}", segment=Segment.EQUITY, tick_size=Decimal("0.05"),
            lot_size=1, currency="INR", timezone="Asia/Kolkata", session_open=SESSION_OPEN,
            session_close=time(15, 30), calendar=None, is_synthetic=True,
        )
        for index in range(count)
    ]


def trading_days(start: date, count: int) -> list[date]:
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def minute_bars(
    instruments: list[Instrument], days: int, seed: int, start: date = date(2024, 1, 1)
) -> BarColumns:
    """`days` sessions of 1-minute bars for each instrument; same seed, same bars."""
    rng = np.random.default_rng(seed)
    sessions = trading_days(start, days)
    opens_ns = np.array(
        [int(datetime.combine(day, SESSION_OPEN, tzinfo=NSE_TZ).astimezone(UTC).timestamp()) for day in sessions],
        dtype=np.int64,
    ) * 1_000_000_000
    minute = np.arange(BARS_PER_DAY, dtype=np.int64) * 60_000_000_000
    stamps = (opens_ns[:, None] + minute[None, :]).ravel()
    per_instrument = stamps.size
    n_instruments = len(instruments)
    total = per_instrument * n_instruments

    # Volatility regimes: a two-state Markov chain per instrument and day.
    calm, wild = 0.0006, 0.0018
    regime = rng.random((n_instruments, days)) < 0.25
    sigma_day = np.where(regime, wild, calm)
    sigma = np.repeat(sigma_day, BARS_PER_DAY, axis=1)
    drift = rng.normal(0.0, 0.00002, size=(n_instruments, 1))
    intrabar = drift + sigma * rng.standard_normal((n_instruments, per_instrument))
    # Overnight gaps move each session's first open away from the previous close.
    gap = np.zeros((n_instruments, per_instrument))
    gap[:, BARS_PER_DAY::BARS_PER_DAY] = rng.normal(0.0, 0.006, size=(n_instruments, days - 1))
    start_price = rng.uniform(80.0, 3000.0, size=(n_instruments, 1))
    log_close = np.log(start_price) + np.cumsum(gap + intrabar, axis=1)
    close = np.exp(log_close)
    open_ = np.exp(log_close - intrabar)
    wick = np.abs(rng.normal(0.0, 1.0, size=(2, n_instruments, per_instrument))) * sigma * close * 0.5
    high = np.maximum(open_, close) + wick[0]
    low = np.maximum(np.minimum(open_, close) - wick[1], 0.01)
    # U-shaped intraday volume profile times a per-instrument scale, log-normal noise.
    u = np.linspace(-1.0, 1.0, BARS_PER_DAY)
    profile = np.tile(1.0 + 2.0 * u**2, days)
    scale = rng.uniform(500.0, 50_000.0, size=(n_instruments, 1))
    volume = np.round(scale * profile * rng.lognormal(0.0, 0.4, size=(n_instruments, per_instrument)))

    def tick(values: np.ndarray) -> np.ndarray:
        return np.round(values / 0.05) * 0.05

    keys = np.repeat(np.array([instrument.key for instrument in instruments], dtype=object), per_instrument)
    o, h, lo, c = tick(open_), tick(high), tick(low), tick(close)
    h = np.maximum(h, np.maximum(o, c))
    lo = np.minimum(lo, np.minimum(o, c))
    return BarColumns(
        instrument_key=keys,
        bar_at=np.tile(stamps, n_instruments),
        open=o.reshape(total), high=h.reshape(total), low=lo.reshape(total), close=c.reshape(total),
        volume=volume.reshape(total).astype(np.float64),
    )
