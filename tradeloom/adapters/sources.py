"""Where bars come from: bundled package data, CSV/Parquet files, the synthetic generator, and the
`HistorySource` port that broker adapters (Kite `historical_data`, Fyers `history`) implement."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import polars as pl

from tradeloom.corporate import splits_from_adjusted_close
from tradeloom.domain import Instrument, Segment, Timeframe
from tradeloom.errors import InputError
from tradeloom.quality import NAT, BarColumns
from tradeloom.synthetic import minute_bars, synthetic_instruments

FIELDS = ("bar_at", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class SourceBatch:
    """One batch to ingest: bars as arrays plus the raw rows (kept for quarantine)."""

    source: str
    timeframe: Timeframe
    bars: BarColumns
    raw: pl.DataFrame | None = None
    instruments: tuple[Instrument, ...] = field(default_factory=tuple)
    # (instrument key, ex-date ns, new shares per old share): recorded in corporate_actions with the bars.
    splits: tuple[tuple[str, int, float], ...] = ()

    def raw_row(self, index: int) -> dict[str, object]:
        """The row as it arrived, JSON-safe (non-finite numbers become strings)."""
        if self.raw is not None:
            return {key: (None if value is None else str(value))
                    for key, value in self.raw.row(index, named=True).items()}
        bars = self.bars
        numbers = {"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close, "volume": bars.volume}
        row: dict[str, object] = {"instrument": str(bars.instrument_key[index]), "bar_at_ns": int(bars.bar_at[index])}
        for name, values in numbers.items():
            value = float(values[index])
            row[name] = value if np.isfinite(value) else str(value)
        return row


class HistorySource(Protocol):
    """Port for a broker's or vendor's historical bars (Kite `historical_data`, Fyers `history`)."""

    name: str

    def history(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> SourceBatch:
        """Bars of `instrument` with `start <= bar_at < end`."""
        ...


class BarHistoryBroker(Protocol):
    """What a broker adapter offers for history (`KiteBroker`, `FyersBroker`)."""

    name: str

    def historical_bars(self, instrument_key: str, timeframe: Timeframe, start: datetime, end: datetime
                        ) -> BarColumns: ...


# Longest span one history request may cover (Kite: 60 days of minutes, Fyers: 100); chunks stay under both.
MAX_REQUEST_SPAN = {Timeframe.MINUTE: timedelta(days=30), Timeframe.HOUR: timedelta(days=180),
                    Timeframe.DAY: timedelta(days=1800)}


@dataclass(frozen=True)
class BrokerHistory:
    """`HistorySource` over a broker adapter: long spans split into requests the broker accepts, and
    `start <= bar_at < end` enforced here (Kite's `to` is inclusive, so the boundary bar would repeat)."""

    broker: BarHistoryBroker

    @property
    def name(self) -> str:
        return f"{self.broker.name}:history"

    def history(self, instrument: Instrument, timeframe: Timeframe, start: datetime, end: datetime) -> SourceBatch:
        if start.tzinfo is None or end.tzinfo is None:
            raise InputError(f"history of {instrument.key}: start={start!r}/end={end!r} need a time zone")
        span = MAX_REQUEST_SPAN[timeframe]
        parts: list[BarColumns] = []
        at = start
        while at < end:
            upto = min(at + span, end)
            parts.append(self.broker.historical_bars(instrument.key, timeframe, at, upto))
            at = upto
        bars = concat_bars(parts)
        if timeframe is Timeframe.DAY:  # Kite stamps a day 00:00 IST, i.e. 18:30 UTC of the day before
            bars = replace(bars, bar_at=session_dates(bars.bar_at, instrument.timezone))
        low, high = int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9
        bars = bars.take((bars.bar_at >= low) & (bars.bar_at < high))
        # Chunk edges overlap by one bar: keep the first copy of each timestamp.
        _, first = np.unique(bars.bar_at, return_index=True)
        return SourceBatch(source=self.name, timeframe=timeframe, bars=bars.take_order(np.sort(first)),
                           instruments=(instrument,))


def session_dates(bar_at_ns: np.ndarray, timezone: str) -> np.ndarray:
    """Daily bars restamped at 00:00 UTC of their trading date in `timezone` (the convention of every daily
    table and of the data gate's session grid); unparseable stamps (NAT) stay NAT."""
    stamps = pl.Series(bar_at_ns.astype(np.int64)).replace(NAT, None).cast(pl.Datetime("ns", "UTC"))
    dates = stamps.dt.convert_time_zone(timezone).dt.date().cast(pl.Datetime("ns")).dt.epoch("ns")
    return dates.fill_null(NAT).to_numpy().astype(np.int64)


def concat_bars(parts: Sequence[BarColumns]) -> BarColumns:
    if not parts:
        empty = np.empty(0, dtype=np.float64)
        return BarColumns(np.empty(0, dtype=object), np.empty(0, dtype=np.int64), empty, empty.copy(), empty.copy(),
                          empty.copy(), empty.copy())
    return BarColumns(*(np.concatenate([getattr(part, name) for part in parts])
                        for name in ("instrument_key", "bar_at", "open", "high", "low", "close", "volume")))


SPOOL_COLUMNS = ("instrument", "bar_at", "open", "high", "low", "close", "volume")


def write_spool(bars: BarColumns, path: Path) -> Path:
    """Bars as a Parquet file (UTC timestamps): the hand-over between the venv that talks to the broker
    and the venv that ingests. Written to a temporary name and renamed, so a reader never sees half."""
    frame = pl.DataFrame({
        "instrument": pl.Series(bars.instrument_key.astype(str), dtype=pl.String),
        "bar_at": pl.Series(bars.bar_at, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
        **{name: pl.Series(getattr(bars, name), dtype=pl.Float64) for name in ("open", "high", "low", "close",
                                                                                "volume")},
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".part")
    frame.write_parquet(temporary)
    temporary.replace(path)
    return path


def read_spool(path: Path, *, source: str, timeframe: Timeframe) -> SourceBatch:
    """A spool file written by `write_spool` as a batch from `source`."""
    if not path.is_file():
        raise InputError(f"spool file not found: {path}; expected the fetch step to have written it")
    frame = pl.read_parquet(path)
    return frame_to_batch(frame, source=source, timeframe=timeframe, columns={}, instrument_key=None,
                          symbol_column="instrument", timezone="UTC", where=str(path))


def _zone(name: str, option: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise InputError(f"{option}={name!r} is not a known time zone (e.g. 'UTC', 'Asia/Kolkata')") from error


def frame_to_batch(
    frame: pl.DataFrame,
    *,
    source: str,
    timeframe: Timeframe,
    columns: Mapping[str, str],
    instrument_key: str | None,
    symbol_column: str | None,
    timezone: str,
    timestamp_format: str | None = None,
    where: str = "input",
    instruments: tuple[Instrument, ...] = (),
) -> SourceBatch:
    """Map a raw frame's columns onto bars; naive timestamps are read in `timezone`."""
    zone = _zone(timezone, "timezone")
    mapping = {name: columns.get(name, name) for name in FIELDS}
    wanted = list(mapping.values()) + ([symbol_column] if symbol_column else [])
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise InputError(
            f"{where}: column(s) {missing} not found; the file has {frame.columns} "
            "(map columns with --column field=name)"
        )
    if (instrument_key is None) == (symbol_column is None):
        raise InputError(f"{where}: give exactly one of --instrument EXCHANGE:SYMBOL or --symbol-column NAME")
    stamp = frame.get_column(mapping["bar_at"])
    if stamp.dtype == pl.String:
        stamp = (
            stamp.str.to_datetime(format=timestamp_format, strict=False, time_zone=None)
            if timestamp_format
            else stamp.str.to_datetime(strict=False)
        )
    elif stamp.dtype == pl.Date:
        stamp = stamp.cast(pl.Datetime("us"))
    if not isinstance(stamp.dtype, pl.Datetime):
        raise InputError(f"{where}: column {mapping['bar_at']!r} holds {stamp.dtype}, expected timestamps")
    if stamp.dtype.time_zone is None:
        stamp = stamp.dt.replace_time_zone(zone.key, ambiguous="earliest", non_existent="null")
    bar_at = stamp.dt.convert_time_zone("UTC").dt.epoch("ns").fill_null(NAT).to_numpy().astype(np.int64)
    if timeframe is Timeframe.DAY:
        bar_at = session_dates(bar_at, zone.key)

    def numbers(name: str) -> np.ndarray:
        values = frame.get_column(mapping[name]).cast(pl.Float64, strict=False).fill_null(float("nan"))
        return values.to_numpy().astype(np.float64)

    keys = (
        np.full(frame.height, instrument_key, dtype=object)
        if instrument_key is not None
        else frame.get_column(symbol_column or "").cast(pl.String).to_numpy().astype(object)
    )
    bars = BarColumns(keys, bar_at, numbers("open"), numbers("high"), numbers("low"), numbers("close"),
                      numbers("volume"))
    return SourceBatch(source=source, timeframe=timeframe, bars=bars, raw=frame, instruments=instruments)


def read_file(
    path: Path,
    *,
    timeframe: Timeframe,
    columns: Mapping[str, str],
    instrument_key: str | None = None,
    symbol_column: str | None = None,
    timezone: str = "UTC",
    timestamp_format: str | None = None,
) -> SourceBatch:
    """A CSV or Parquet file of bars."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pl.read_parquet(path)
        elif suffix in {".csv", ".txt", ".gz"}:
            frame = pl.read_csv(path, infer_schema_length=0)  # all strings: parse explicitly below
        else:
            raise InputError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as error:
        raise InputError(f"{path}: cannot read it as {suffix.lstrip('.')}: {error}") from error
    return frame_to_batch(
        frame, source=f"file:{path.name}", timeframe=timeframe, columns=columns, instrument_key=instrument_key,
        symbol_column=symbol_column, timezone=timezone, timestamp_format=timestamp_format, where=str(path),
    )


# -- bundled real data -------------------------------------------------------------------------------

def _us_equity(exchange: str, symbol: str) -> Instrument:
    return Instrument(exchange=exchange, symbol=symbol, segment=Segment.EQUITY, tick_size=Decimal("0.01"),
                      currency="USD", timezone="America/New_York", calendar="XNYS")


EURUSD = Instrument(
    exchange="FX", symbol="EURUSD", segment=Segment.CURRENCY, tick_size=Decimal("0.00001"), currency="USD",
    # FX trades from Sunday 17:00 New York time to Friday 17:00: five overnight sessions opening Sun..Thu.
    timezone="America/New_York", session_open=time(17, 0), session_close=time(17, 0), trading_days=(6, 0, 1, 2, 3),
    calendar=None,
)
BUNDLED_INSTRUMENTS: tuple[Instrument, ...] = (
    _us_equity("NASDAQ", "GOOGL"),
    EURUSD,
    _us_equity("NASDAQ", "AAPL"),
    _us_equity("NYSE", "IBM"),
    _us_equity("NASDAQ", "MSFT"),
    _us_equity("NASDAQ", "GOOG"),
)


def _package_file(package: str, *parts: str) -> Path:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as error:
        raise InputError(f"bundled data package {package!r} is not installed (run `make setup`)") from error
    return Path(str(root.joinpath(*parts)))


def bundled_batches() -> Iterator[SourceBatch]:
    """Real OHLCV shipped in registry packages: gym-anytrading (MIT) and bokeh_sampledata (public domain)."""
    by_key = {instrument.key: instrument for instrument in BUNDLED_INSTRUMENTS}
    yield frame_to_batch(
        pl.read_csv(_package_file("gym_anytrading", "datasets", "data", "STOCKS_GOOGL.csv"), infer_schema_length=0),
        source="bundled:gym-anytrading", timeframe=Timeframe.DAY,
        columns={"bar_at": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                 "volume": "Volume"},
        instrument_key="NASDAQ:GOOGL", symbol_column=None, timezone="UTC", timestamp_format="%Y-%m-%d",
        instruments=(by_key["NASDAQ:GOOGL"],),
    )
    yield frame_to_batch(
        pl.read_csv(_package_file("gym_anytrading", "datasets", "data", "FOREX_EURUSD_1H_ASK.csv"),
                    infer_schema_length=0),
        source="bundled:gym-anytrading", timeframe=Timeframe.HOUR,
        columns={"bar_at": "Time", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                 "volume": "Volume"},
        instrument_key="FX:EURUSD", symbol_column=None, timezone="UTC", timestamp_format="%d.%m.%Y %H:%M:%S%.3f",
        instruments=(by_key["FX:EURUSD"],),
    )
    stocks = pl.read_csv(_package_file("bokeh_sampledata", "_data", "stocks.csv.gz"), infer_schema_length=0)
    exchange = {"AAPL": "NASDAQ", "IBM": "NYSE", "MSFT": "NASDAQ", "GOOG": "NASDAQ"}
    stocks = stocks.filter(pl.col("Ticker").is_in(list(exchange))).with_columns(
        pl.col("Ticker").replace_strict(exchange).alias("Exchange")
    ).with_columns((pl.col("Exchange") + ":" + pl.col("Ticker")).alias("instrument"))
    batch = frame_to_batch(
        stocks, source="bundled:bokeh_sampledata", timeframe=Timeframe.DAY,
        columns={"bar_at": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                 "volume": "Volume"},
        instrument_key=None, symbol_column="instrument", timezone="UTC", timestamp_format="%Y-%m-%d",
        instruments=tuple(by_key[f"{exchange[ticker]}:{ticker}"] for ticker in exchange),
    )
    # The file's prices are as traded (AAPL halves at its 2005 split); its adjusted close tells the splits.
    splits: list[tuple[str, int, float]] = []
    for (key,), rows in stocks.sort("Date").group_by(["instrument"], maintain_order=True):
        stamps = rows["Date"].str.to_datetime("%Y-%m-%d", time_zone="UTC").dt.epoch("ns").to_numpy()
        found = splits_from_adjusted_close(stamps.astype(np.int64), rows["Close"].cast(pl.Float64).to_numpy(),
                                           rows["Adj Close"].cast(pl.Float64).to_numpy())
        splits += [(str(key), ex_at_ns, ratio) for ex_at_ns, ratio in found]
    yield replace(batch, splits=tuple(splits))


def synthetic_batch(instruments: int, days: int, seed: int) -> SourceBatch:
    """Seeded synthetic minute bars for `instruments` NSE-like symbols (exchange SYNTH)."""
    if instruments < 1 or days < 1:
        raise InputError(f"synthetic data needs instruments >= 1 and days >= 1, got {instruments} and {days}")
    listed = synthetic_instruments(instruments)
    return SourceBatch(
        source=f"synthetic:seed={seed}", timeframe=Timeframe.MINUTE,
        bars=minute_bars(listed, days=days, seed=seed), instruments=tuple(listed),
    )
