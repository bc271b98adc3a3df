"""Broker history for `market_data_ingest`, in two steps across the two venvs.

`fetch_history` runs in the live venv (the broker SDKs live there): it pulls the interval's bars for our
instruments that carry the broker's token and writes them to a Parquet spool file under `.loom/spool/`.
`ingest_spool` runs in the ML venv: the same ingest as every other source (batch record, quarantine,
idempotent upsert). The spool name is a function of (broker, timeframe, interval), so a retried fetch
overwrites its own file and a re-ingest adds nothing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.broker_connection import BrokerSettings, connect
from tradeloom.adapters.db import Database
from tradeloom.adapters.sources import BrokerHistory, concat_bars, read_spool, write_spool
from tradeloom.adapters.store import load_instruments
from tradeloom.domain import Instrument, Timeframe
from tradeloom.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    source: str
    path: str
    rows: int
    instruments: int
    start: str
    end: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_broker_token(instrument: Instrument, broker: str) -> bool:
    return instrument.kite_token is not None if broker == "kite" else bool(instrument.fyers_symbol)


def broker_instruments(db: Database, settings: BrokerSettings) -> list[Instrument]:
    """The instruments to pull: the configured universe, else every one carrying the broker's token."""
    with db.transaction() as conn:
        listed = load_instruments(conn, settings.universe or None)
    chosen = [instrument for instrument in listed if has_broker_token(instrument, settings.name)]
    missing = [instrument.key for instrument in listed if settings.universe and instrument not in chosen]
    if missing:
        raise ConfigError(f"universe instrument(s) {missing} have no {settings.name} token in the instruments table; "
                          "expected the premarket instrument refresh to have set them")
    return chosen


def spool_path(spool_dir: Path, broker: str, timeframe: Timeframe, start: datetime, end: datetime) -> Path:
    stamp = "%Y%m%dT%H%MZ"
    return spool_dir / broker / f"{timeframe.value}_{start.strftime(stamp)}_{end.strftime(stamp)}.parquet"


def fetch_history(db: Database, settings: BrokerSettings, start: datetime, end: datetime, spool_dir: Path,
                  timeframe: Timeframe = Timeframe.MINUTE) -> FetchResult:
    """Pull [start, end) from the broker into a spool file (live venv)."""
    instruments = broker_instruments(db, settings)
    broker = connect(settings)
    broker.use_instruments(instruments)
    source = BrokerHistory(broker)
    bars = concat_bars([source.history(instrument, timeframe, start, end).bars for instrument in instruments])
    path = write_spool(bars, spool_path(spool_dir, settings.name, timeframe, start, end))
    log.info("fetched %d bars of %d instruments from %s for [%s, %s) into %s", len(bars), len(instruments),
             source.name, start.isoformat(), end.isoformat(), path)
    return FetchResult(source=source.name, path=str(path), rows=len(bars), instruments=len(instruments),
                       start=start.isoformat(), end=end.isoformat())


def ingest_spool(db: Database, path: Path, source: str, timeframe: Timeframe = Timeframe.MINUTE) -> dict[str, Any]:
    """Ingest a spool file (ML venv): the same batch record, quarantine and upsert as any source."""
    from pipelines.ingest import ingest

    batch = read_spool(path, source=source, timeframe=timeframe)
    if len(batch.bars) == 0:
        return {"rows": 0, "ingest_batch_id": None, "inserted": 0, "updated": 0, "unchanged": 0, "quarantined": 0,
                "not_closed": 0, "table": timeframe.table, "source": source}
    report = ingest(batch, db)
    return {"rows": len(batch.bars), "ingest_batch_id": report.ingest_batch_id, "inserted": report.inserted,
            "updated": report.updated, "unchanged": report.unchanged, "quarantined": report.quarantined,
            "not_closed": report.not_closed, "table": report.table, "source": source}
