"""Instrument master refresh from the broker: upsert tick size, lot size and the broker's token/symbol
into `instruments`, touching only rows whose values changed, and count what happened.

Runs in the live venv (the broker adapters import the SDKs). Kite: `instruments(exchange)` for the
configured exchanges; Fyers: the public symbol-master CSV per segment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg2.extras

from pipelines.broker_connection import BrokerSettings
from tradeloom.adapters.db import Connection, Database
from tradeloom.domain import Instrument, Segment
from tradeloom.errors import ConfigError

if TYPE_CHECKING:
    from tradeloom.adapters.brokers.fyers.execution import FyersBroker
    from tradeloom.adapters.brokers.kite.execution import KiteBroker

log = logging.getLogger(__name__)
BROKER_COLUMN = {"kite": "kite_token", "fyers": "fyers_symbol"}
# What the broker is the authority for; `trading_days` and `is_synthetic` stay ours.
REFRESHED_COLUMNS = ("segment", "currency", "tick_size", "lot_size", "timezone", "session_open", "session_close",
                     "calendar")


@dataclass(frozen=True)
class RefreshResult:
    broker: str
    listed: int  # instruments the broker's master offered after filtering
    inserted: int
    updated: int
    unchanged: int
    missing: list[str] = field(default_factory=list)  # universe keys the broker does not list

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def upsert_master(conn: Connection, instruments: Sequence[Instrument], broker: str) -> tuple[int, int, int]:
    """(inserted, updated, unchanged): a row whose broker-owned values are all equal is left alone."""
    if broker not in BROKER_COLUMN:
        raise ConfigError(f"broker={broker!r} has no instrument master; expected one of {sorted(BROKER_COLUMN)}")
    token_column = BROKER_COLUMN[broker]
    unique = list({instrument.key: instrument for instrument in reversed(instruments)}.values())
    if not unique:
        return 0, 0, 0
    columns = ("exchange", "symbol", *REFRESHED_COLUMNS, token_column)
    rows = [(i.exchange, i.symbol, i.segment.value, i.currency, i.tick_size, i.lot_size, i.timezone, i.session_open,
             i.session_close, i.calendar, getattr(i, token_column)) for i in unique]
    owned = columns[2:]
    current = ", ".join(f"instruments.{name}" for name in owned)
    incoming = ", ".join(f"excluded.{name}" for name in owned)
    sql = (f"insert into instruments ({', '.join(columns)}) values %s on conflict (exchange, symbol) do update set "
           f"{', '.join(f'{name} = excluded.{name}' for name in owned)}, updated_at = now() "
           f"where ({current}) is distinct from ({incoming}) returning (xmax = 0)")
    with conn.cursor() as cur:
        touched = psycopg2.extras.execute_values(cur, sql, rows, page_size=1000, fetch=True)
    inserted = sum(1 for (is_new,) in touched if is_new)
    return inserted, len(touched) - inserted, len(unique) - len(touched)


def broker_master(broker: KiteBroker | FyersBroker, settings: BrokerSettings) -> list[Instrument]:
    """The broker's listing, cut to the universe (or to equities when no universe is configured)."""
    listed: list[Instrument] = []
    if settings.name == "kite":
        for exchange in settings.kite_exchanges:
            listed += broker.instruments(exchange)  # type: ignore[union-attr]
    else:
        for segment in settings.fyers_segments:
            listed += broker.symbol_master(segment)  # type: ignore[union-attr]
    if settings.universe:
        wanted = set(settings.universe)
        return [instrument for instrument in listed if instrument.key in wanted]
    return [instrument for instrument in listed if instrument.segment is Segment.EQUITY]


def refresh_instrument_master(db: Database, broker: KiteBroker | FyersBroker, settings: BrokerSettings
                              ) -> RefreshResult:
    listed = broker_master(broker, settings)
    with db.transaction() as conn:
        inserted, updated, unchanged = upsert_master(conn, listed, settings.name)
    keys = {instrument.key for instrument in listed}
    result = RefreshResult(settings.name, len(listed), inserted, updated, unchanged,
                           [key for key in settings.universe if key not in keys])
    log.info("instrument master from %s: %s", settings.name, result.as_dict())
    return result
