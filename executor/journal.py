"""The executor's journal: a local spool file first (fsync'd), then TimescaleDB.

Every record is appended to `spool.jsonl` (written through to the OS at once); orders are fsync'd before they
are sent and everything else at the end of each bar. Records are then applied to the
database. While the database is down, records stay in the spool (nothing is lost) and `db_healthy` is
False (the service pauses new entries); when it comes back, `flush()` applies the backlog in order. Every
database write is an idempotent upsert keyed by client order id, fill id or event key, so re-applying the
spool after a crash never duplicates a row.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from executor.oms import Lineage, ManagedOrder, order_from_row
from tradeloom.domain import Fill
from tradeloom.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

Connect = Callable[[], psycopg2.extensions.connection]


def _ts(ns: int | None) -> str | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


def order_record(order: ManagedOrder) -> dict[str, Any]:
    intent, lineage = order.intent, order.lineage
    return {
        "client_order_id": intent.client_order_id, "broker": order.broker, "broker_order_id": order.broker_order_id,
        "strategy": lineage.strategy, "mode": lineage.mode, "instrument_key": intent.instrument_key,
        "side": int(intent.side), "quantity": intent.quantity, "filled_quantity": order.filled_quantity,
        "order_type": intent.order_type.value, "product": intent.product.value, "purpose": intent.purpose.value,
        "limit_price": None if intent.limit_price is None else str(intent.limit_price),
        "stop_price": None if intent.stop_price is None else str(intent.stop_price),
        "average_price": None if order.average_price is None else str(order.average_price),
        "parent_client_order_id": intent.parent_client_order_id, "state": order.state.value,
        "status_message": order.status_message[:500], "bar_at_ns": lineage.bar_at_ns, "bar_at": _ts(lineage.bar_at_ns),
        "model_name": lineage.model_name, "model_version": lineage.model_version,
        "feature_snapshot_hash": lineage.feature_snapshot_hash, "unconfirmed": order.unconfirmed,
        "held_for_parent": order.held_for_parent,
    }


_APPLY: dict[str, str] = {
    "order": """
        insert into orders (client_order_id, broker, broker_order_id, strategy, mode, instrument_key, side, quantity,
            filled_quantity, order_type, product, purpose, limit_price, stop_price, average_price,
            parent_client_order_id, state, status_message, bar_at, model_name, model_version, feature_snapshot_hash,
            unconfirmed, held_for_parent, updated_at)
        values (%(client_order_id)s, %(broker)s, %(broker_order_id)s, %(strategy)s, %(mode)s, %(instrument_key)s,
            %(side)s, %(quantity)s, %(filled_quantity)s, %(order_type)s, %(product)s, %(purpose)s, %(limit_price)s,
            %(stop_price)s, %(average_price)s, %(parent_client_order_id)s, %(state)s, %(status_message)s,
            %(bar_at)s, %(model_name)s, %(model_version)s, %(feature_snapshot_hash)s, %(unconfirmed)s,
            %(held_for_parent)s, now())
        on conflict (client_order_id) do update set broker_order_id = excluded.broker_order_id,
            quantity = excluded.quantity, filled_quantity = excluded.filled_quantity,
            average_price = excluded.average_price, state = excluded.state, stop_price = excluded.stop_price,
            status_message = excluded.status_message, unconfirmed = excluded.unconfirmed,
            held_for_parent = excluded.held_for_parent, updated_at = now();
        insert into order_events (event_key, client_order_id, state, filled_quantity, detail)
        values (%(event_key)s, %(client_order_id)s, %(state)s, %(filled_quantity)s, %(detail)s)
        on conflict (event_key) do nothing
    """,
    "fill": """
        insert into fills (fill_id, client_order_id, broker, instrument_key, side, quantity, price, fees, filled_at)
        values (%(fill_id)s, %(client_order_id)s, %(broker)s, %(instrument_key)s, %(side)s, %(quantity)s,
            %(price)s, %(fees)s, %(filled_at)s)
        on conflict (fill_id) do nothing
    """,
    "decision": """
        insert into decisions (strategy, mode, bar_at, model_name, model_version, feature_snapshot_hash,
            data_source, record)
        values (%(strategy)s, %(mode)s, %(bar_at)s, %(model_name)s, %(model_version)s, %(feature_snapshot_hash)s,
            %(data_source)s, %(record)s)
        on conflict (strategy, mode, bar_at) do update set record = excluded.record,
            model_version = excluded.model_version, feature_snapshot_hash = excluded.feature_snapshot_hash
    """,
    "equity": """
        insert into equity_snapshots (strategy, mode, snapshot_at, equity, cash, gross_exposure, net_exposure,
            realized_pnl, positions)
        values (%(strategy)s, %(mode)s, %(snapshot_at)s, %(equity)s, %(cash)s, %(gross_exposure)s,
            %(net_exposure)s, %(realized_pnl)s, %(positions)s)
        on conflict (strategy, mode, snapshot_at) do update set equity = excluded.equity, cash = excluded.cash,
            gross_exposure = excluded.gross_exposure, net_exposure = excluded.net_exposure,
            realized_pnl = excluded.realized_pnl, positions = excluded.positions
    """,
    "event": """
        insert into executor_events (event_key, kind, actor, detail) values (%(event_key)s, %(kind)s, %(actor)s,
            %(detail)s) on conflict (event_key) do nothing
    """,
    "bar": """
        insert into bars_1m (instrument_id, bar_at, open, high, low, close, volume, source)
        select instrument_id, %(bar_at)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, %(source)s
        from instruments where exchange || ':' || symbol = %(instrument_key)s
        on conflict (instrument_id, bar_at) do nothing
    """,
    "control": """
        insert into executor_controls (control, engaged, actor, reason, updated_at)
        values (%(control)s, %(engaged)s, %(actor)s, %(reason)s, now())
        on conflict (control) do update set engaged = excluded.engaged, actor = excluded.actor,
            reason = excluded.reason, updated_at = now()
    """,
}


class Journal:
    def __init__(self, spool_dir: Path, connect: Connect, *, strategy: str, mode: str) -> None:
        self.strategy, self.mode = strategy, mode
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.path = spool_dir / f"spool-{strategy}-{mode}.jsonl"
        self._connect = connect
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.RLock()
        self._handle = self.path.open("a", encoding="utf-8")
        # Records held back while the bar's orders go out (see `deferred`): (kind, data or an order snapshot).
        self._deferred: list[tuple[str, dict[str, Any] | ManagedOrder]] | None = None
        self.db_healthy = True
        self.pending = sum(1 for _ in self.path.open(encoding="utf-8"))
        self.outages = 0

    # -- writing --------------------------------------------------------------------------------------
    def _append(self, kind: str, data: dict[str, Any]) -> None:
        """Append to the spool, through to the OS (`sync` makes it durable)."""
        with self._lock:
            if self._deferred is not None:
                self._deferred.append((kind, data))
                return
            self._handle.write(json.dumps({"kind": kind, "data": data}, default=str) + "\n")
            self._handle.flush()
            self.pending += 1

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold records back (in memory, in order) until the block ends, or until a `sync` inside it.

        The trader sends a bar's orders inside this block: the records that must precede a send (its NEW
        record) are written and fsync'd by the write-ahead `sync`, which always writes what is held back first;
        the SENT / acknowledged records that follow are formatted and written after the orders are out. A
        process crash inside the block loses only those, and an order journaled NEW is looked up at the broker
        by its client order id after a restart all the same (as after a machine crash).
        """
        with self._lock:
            outer = self._deferred is None  # a nested block leaves the writing to the outer one
            if outer:
                self._deferred = []
        try:
            yield
        finally:
            if outer:
                with self._lock:
                    self._write_deferred()
                    self._deferred = None

    def _write_deferred(self) -> None:
        held = self._deferred
        if not held:
            return
        self._deferred = []
        lines = [json.dumps({"kind": kind, "data": self._order_data(data) if isinstance(data, ManagedOrder)
                             else data}, default=str) + "\n" for kind, data in held]
        self._handle.write("".join(lines))
        self._handle.flush()
        self.pending += len(lines)

    def save_order(self, order: ManagedOrder) -> None:
        # Reaches the OS at once (a process crash loses nothing), unless `deferred`; `sync` makes new orders
        # durable before they are sent. A SENT record needs no fsync of its own: after a machine crash an order
        # journaled NEW is looked up at the broker by its client order id all the same (OrderManager.reconcile).
        with self._lock:
            if self._deferred is not None:  # a snapshot: the order changes again before it is written
                self._deferred.append(("order", copy.copy(order)))
                return
        self._append("order", self._order_data(order))

    @staticmethod
    def _order_data(order: ManagedOrder) -> dict[str, Any]:
        record = order_record(order)
        record["event_key"] = uuid.uuid4().hex
        record["detail"] = json.dumps({"message": order.status_message[:500], "unconfirmed": order.unconfirmed,
                                       "held_for_parent": order.held_for_parent})
        return record

    def sync(self) -> None:
        with self._lock:
            if self._deferred:
                self._write_deferred()
            self._handle.flush()
            # fdatasync: the appended records and the file size that reaches them, without the timestamps'
            # metadata write fsync adds (the write-ahead sync sits between a bar's decision and its orders).
            os.fdatasync(self._handle.fileno())

    def record_fill(self, fill: Fill, broker: str) -> None:
        self._append("fill", {
            "fill_id": fill.fill_id, "client_order_id": fill.client_order_id, "broker": broker,
            "instrument_key": fill.instrument_key, "side": int(fill.side), "quantity": fill.quantity,
            "price": str(fill.price), "fees": str(fill.fees), "filled_at": _ts(fill.filled_at_ns),
        })

    def record_decision(self, lineage: Lineage, record: dict[str, Any], data_source: str) -> None:
        self._append("decision", {
            "strategy": lineage.strategy, "mode": lineage.mode, "bar_at": _ts(lineage.bar_at_ns),
            "model_name": lineage.model_name, "model_version": lineage.model_version,
            "feature_snapshot_hash": lineage.feature_snapshot_hash, "data_source": data_source,
            "record": json.dumps(record, default=str),
        })

    def record_equity(self, snapshot_at_ns: int, equity: float, cash: float, gross: float, net: float,
                      realized: float, positions: dict[str, Any]) -> None:
        self._append("equity", {
            "strategy": self.strategy, "mode": self.mode, "snapshot_at": _ts(snapshot_at_ns),
            "equity": round(equity, 4),
            "cash": round(cash, 4), "gross_exposure": round(gross, 4), "net_exposure": round(net, 4),
            "realized_pnl": round(realized, 4), "positions": json.dumps(positions, default=str),
        })

    def record_event(self, kind: str, detail: dict[str, object], actor: str = "executor") -> None:
        self._append("event", {"event_key": uuid.uuid4().hex, "kind": kind, "actor": actor,
                               "detail": json.dumps(detail, default=str)})

    def record_bar(self, instrument_key: str, bar_at_ns: int, values: tuple[float, float, float, float, float],
                   source: str) -> None:
        """A closed live bar for bars_1m (a stored bar is never rewritten)."""
        o, h, lo, c, v = values
        self._append("bar", {"instrument_key": instrument_key, "bar_at": _ts(bar_at_ns), "open": o, "high": h,
                             "low": lo, "close": c, "volume": v, "source": source})

    def set_control(self, control: str, engaged: bool, actor: str, reason: str = "") -> None:
        self._append("control", {"control": control, "engaged": engaged, "actor": actor, "reason": reason})

    # -- applying to the database ------------------------------------------------------------------------
    def flush(self) -> bool:
        """Apply the spool to the database; True when nothing is left pending."""
        with self._lock:
            if self.pending == 0:
                return True
            lines = self.path.read_text(encoding="utf-8").splitlines()
            try:
                conn = self._connection()
                with conn, conn.cursor() as cur:
                    for line in lines:
                        entry = json.loads(line)
                        cur.execute(_APPLY[entry["kind"]], entry["data"])
            except (psycopg2.Error, DatabaseUnavailableError) as error:
                os.fsync(self._handle.fileno())  # the spool is now the only copy: make it durable
                if self.db_healthy:
                    self.outages += 1
                    log.error("journal database unavailable (%s); %d records held in %s", type(error).__name__,
                              len(lines), self.path)
                self.db_healthy = False
                self._drop_connection()
                return False
            # Applied: start a fresh spool (atomic: truncate after commit; a crash before this re-applies
            # idempotently).
            self._handle.close()
            self.path.write_text("", encoding="utf-8")
            self._handle = self.path.open("a", encoding="utf-8")
            if not self.db_healthy:
                log.warning("journal database back; %d spooled records applied", len(lines))
            self.db_healthy = True
            self.pending = 0
            return True

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        self.flush()
        self._handle.close()
        self._drop_connection()

    # -- reading back (start-up) ----------------------------------------------------------------------
    def load_orders(self) -> tuple[list[ManagedOrder], set[str]]:
        """Non-terminal orders and today's fill ids of this strategy and mode (after applying the spool)."""
        if not self.flush():
            raise DatabaseUnavailableError("journal database unavailable at start-up: cannot reconcile safely")
        conn = self._connection()
        with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                "select o.*, (extract(epoch from bar_at) * 1e9)::bigint as bar_at_ns from orders o"
                " where strategy = %s and mode = %s and (state not in ('filled', 'cancelled', 'rejected', 'expired')"
                " or updated_at > now() - interval '1 day')",
                (self.strategy, self.mode),
            )
            rows = cur.fetchall()
            cur.execute(
                "select f.fill_id from fills f join orders o using (client_order_id)"
                " where o.strategy = %s and o.mode = %s", (self.strategy, self.mode),
            )
            fill_ids = {str(row["fill_id"]) for row in cur.fetchall()}
        return [order_from_row(dict(row)) for row in rows], fill_ids
