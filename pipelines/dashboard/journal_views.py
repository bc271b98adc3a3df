"""Read-only views over the executor's journal: what the dashboard shows, as JSON-ready dicts.

Every function takes an open connection (the caller makes it read-only) and a (strategy, mode) target.
Money arrives as numeric from the journal and leaves as float for display only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2.extensions
import psycopg2.extras

TERMINAL_STATES = ("filled", "cancelled", "rejected", "expired")
Row = dict[str, Any]


@dataclass(frozen=True)
class Target:
    strategy: str
    mode: str


def _rows(conn: psycopg2.extensions.connection, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(row) for row in cur.fetchall()]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _float(value: Decimal | float | int | None) -> float | None:
    return None if value is None else float(value)


def resolve_target(conn: psycopg2.extensions.connection, strategy: str | None, mode: str | None) -> Target | None:
    """The configured strategy and mode, filling what is unset from the latest decision in the journal."""
    if strategy is not None and mode is not None:
        return Target(strategy, mode)
    rows = _rows(conn, "select strategy, mode from decisions where (%s::text is null or strategy = %s)"
                       " and (%s::text is null or mode = %s) order by created_at desc, bar_at desc limit 1",
                 (strategy, strategy, mode, mode))
    if rows:
        return Target(rows[0]["strategy"], rows[0]["mode"])
    return None if strategy is None else Target(strategy, mode or "paper")


def positions(conn: psycopg2.extensions.connection, target: Target) -> dict[str, Any]:
    """Per instrument: net quantity, average cost and realized PnL from the fills (average-cost method),
    marks from the latest equity snapshot; plus the snapshot's equity, cash and exposure."""
    fills = _rows(conn, "select f.instrument_key, f.side, f.quantity, f.price, f.fees from fills f"
                        " join orders o using (client_order_id) where o.strategy = %s and o.mode = %s"
                        " order by f.filled_at, f.fill_id", (target.strategy, target.mode))
    snapshot_rows = _rows(conn, "select snapshot_at, equity, cash, gross_exposure, net_exposure, positions"
                                " from equity_snapshots where strategy = %s and mode = %s"
                                " order by snapshot_at desc limit 1", (target.strategy, target.mode))
    snapshot = snapshot_rows[0] if snapshot_rows else None
    marks: dict[str, float] = {}
    if snapshot is not None:
        held = snapshot["positions"]
        held = json.loads(held) if isinstance(held, str) else held
        marks = {key: float(value.get("mark", 0.0)) for key, value in held.items()}
    books: dict[str, dict[str, float]] = {}
    for fill in fills:
        book = books.setdefault(fill["instrument_key"], {"quantity": 0.0, "cost": 0.0, "realized": 0.0,
                                                         "fees": 0.0, "fills": 0.0})
        signed, price = float(fill["side"]) * float(fill["quantity"]), float(fill["price"])
        book["fees"] += float(fill["fees"])
        book["fills"] += 1
        held_quantity = book["quantity"]
        if held_quantity == 0 or (held_quantity > 0) == (signed > 0):
            book["cost"] += signed * price
            book["quantity"] += signed
            continue
        average = book["cost"] / held_quantity
        closed = min(abs(signed), abs(held_quantity))
        book["realized"] += closed * (price - average) * (1 if held_quantity > 0 else -1)
        remaining = held_quantity + signed
        if remaining == 0 or (remaining > 0) == (held_quantity > 0):
            book["cost"] = average * remaining
        else:  # flipped through zero: the rest opens a new position at this fill's price
            book["cost"] = remaining * price
        book["quantity"] = remaining
    equity = _float(snapshot["equity"]) if snapshot else None
    table = []
    for key in sorted(set(books) | set(marks)):
        book = books.get(key, {"quantity": 0.0, "cost": 0.0, "realized": 0.0, "fees": 0.0, "fills": 0.0})
        quantity = book["quantity"]
        mark = marks.get(key)
        average_price = book["cost"] / quantity if quantity else None
        value = quantity * mark if mark is not None else None
        table.append({
            "instrument": key, "quantity": int(quantity), "average_price": average_price, "mark": mark,
            "market_value": value,
            "unrealized_pnl": (mark - average_price) * quantity if mark is not None and average_price is not None
            else 0.0,
            "realized_pnl": book["realized"], "fees": book["fees"], "fills": int(book["fills"]),
            "exposure_share": abs(value) / equity if value is not None and equity else 0.0,
        })
    return {
        "as_of": _iso(snapshot["snapshot_at"]) if snapshot else None, "equity": equity,
        "cash": _float(snapshot["cash"]) if snapshot else None,
        "gross_exposure": _float(snapshot["gross_exposure"]) if snapshot else 0.0,
        "net_exposure": _float(snapshot["net_exposure"]) if snapshot else 0.0,
        "positions": table,
    }


def equity_curve(conn: psycopg2.extensions.connection, target: Target, timezone: str) -> dict[str, Any]:
    """The latest session day's equity curve (day = date in the exchange time zone), intraday PnL from the
    previous day's last snapshot (or the day's first when there is none), and the drawdown from the running peak."""
    day_rows = _rows(conn, "select (max(snapshot_at) at time zone %s)::date as day from equity_snapshots"
                           " where strategy = %s and mode = %s", (timezone, target.strategy, target.mode))
    day = day_rows[0]["day"] if day_rows else None
    if day is None:
        return {"day": None, "points": [], "start_equity": None, "equity": None, "pnl": None, "pnl_pct": None,
                "drawdown": None, "max_drawdown": None}
    points = _rows(conn, "select snapshot_at, equity from equity_snapshots where strategy = %s and mode = %s"
                         " and (snapshot_at at time zone %s)::date = %s order by snapshot_at",
                   (target.strategy, target.mode, timezone, day))
    before = _rows(conn, "select equity from equity_snapshots where strategy = %s and mode = %s"
                         " and (snapshot_at at time zone %s)::date < %s order by snapshot_at desc limit 1",
                   (target.strategy, target.mode, timezone, day))
    start = float(before[0]["equity"]) if before else float(points[0]["equity"])
    peak, max_drawdown, drawdown, last, curve = start, 0.0, 0.0, start, []
    for point in points:
        last = float(point["equity"])
        peak = max(peak, last)
        drawdown = last / peak - 1.0 if peak > 0 else 0.0
        max_drawdown = min(max_drawdown, drawdown)
        curve.append({"at": _iso(point["snapshot_at"]), "equity": last, "drawdown": drawdown})
    return {"day": day.isoformat(), "points": curve, "start_equity": start, "equity": last, "pnl": last - start,
            "pnl_pct": (last / start - 1.0) if start else None, "drawdown": drawdown,
            "max_drawdown": max_drawdown}


def _policy_row(key: str, value: Row) -> Row:
    """An RL sizing policy's record (target weight, book position, approved target) in the signal columns:
    the signal is the target's side, `proposed` the trade it asks for and entry/exit the trade risk approved,
    split into the part that closes the book and the part that opens it."""
    weight = float(value.get("target_weight", 0.0))
    position, desired, approved = (int(value.get(name, 0)) for name in ("position", "desired", "approved"))
    if position == 0 or ((approved > 0) == (position > 0) and approved != 0):
        opens = abs(approved) > abs(position)
        entry, exit_ = (approved - position, 0) if opens else (0, approved - position)
    else:  # flat target or a flip: the whole position closes, any opposite target opens afresh
        entry, exit_ = approved, -position
    return {"instrument": key, "signal": (weight > 0) - (weight < 0), "confidence": None, "target_weight": weight,
            "position": position, "proposed": abs(desired - position), "entry": entry, "exit": exit_,
            "probabilities": None}


def signal_rows(record: Row) -> list[Row]:
    """One row per instrument of a decision record, for a direction model or an RL sizing policy."""
    items = sorted(record.get("instruments", {}).items())
    if record.get("output_kind") == "target_weight":
        return [_policy_row(key, value) for key, value in items]
    probabilities = record.get("probabilities", {})
    return [{"instrument": key, "signal": value.get("signal"), "confidence": value.get("confidence"),
             "target_weight": None, "position": None, "proposed": value.get("proposed"), "entry": value.get("entry"),
             "exit": value.get("exit"), "probabilities": probabilities.get(key)} for key, value in items]


def signals(conn: psycopg2.extensions.connection, target: Target, limit: int = 40) -> dict[str, Any]:
    """The latest decision per instrument (signal, confidence, sizes, class probabilities) and the risk
    rules that fired over recent decisions."""
    rows = _rows(conn, "select bar_at, model_name, model_version, feature_snapshot_hash, data_source, record"
                       " from decisions where strategy = %s and mode = %s order by bar_at desc limit 200",
                 (target.strategy, target.mode))
    if not rows:
        return {"bar_at": None, "model": None, "instruments": [], "rules": []}
    latest = rows[0]
    instruments = signal_rows(latest["record"])
    rules: list[Row] = []
    for row in rows:
        for event in row["record"].get("events", []):
            rules.append({"bar_at": _iso(row["bar_at"]), "instrument": event.get("instrument_key"),
                          "rule": event.get("rule"), "action": event.get("action"), "reason": event.get("reason")})
            if len(rules) >= limit:
                break
        if len(rules) >= limit:
            break
    return {"bar_at": _iso(latest["bar_at"]), "model": latest["model_name"], "model_version": latest["model_version"],
            "feature_snapshot_hash": latest["feature_snapshot_hash"], "data_source": latest["data_source"],
            "instruments": instruments, "rules": rules}


_ORDER_COLUMNS = ("client_order_id, broker, broker_order_id, instrument_key, side, quantity, filled_quantity,"
                  " order_type, purpose, limit_price, stop_price, average_price, state, status_message, bar_at,"
                  " model_name, model_version, feature_snapshot_hash, created_at, updated_at")


def _order(row: Row) -> Row:
    out = dict(row)
    for name in ("limit_price", "stop_price", "average_price"):
        out[name] = _float(row[name])
    for name in ("bar_at", "created_at", "updated_at"):
        out[name] = _iso(row[name])
    out["side"] = "BUY" if row["side"] > 0 else "SELL"
    return out


def orders(conn: psycopg2.extensions.connection, target: Target, limit: int = 30) -> dict[str, Any]:
    """Open (non-terminal) orders and the most recent ones, each with its lineage."""
    open_rows = _rows(conn, f"select {_ORDER_COLUMNS} from orders where strategy = %s and mode = %s"
                            " and state not in %s order by bar_at desc nulls last, created_at desc",
                      (target.strategy, target.mode, TERMINAL_STATES))
    recent = _rows(conn, f"select {_ORDER_COLUMNS} from orders where strategy = %s and mode = %s"
                         " order by bar_at desc nulls last, created_at desc, client_order_id limit %s",
                   (target.strategy, target.mode, limit))
    counts = _rows(conn, "select state, count(*) as n from orders where strategy = %s and mode = %s group by state",
                   (target.strategy, target.mode))
    return {"open": [_order(row) for row in open_rows], "recent": [_order(row) for row in recent],
            "by_state": {row["state"]: int(row["n"]) for row in counts}}


def status(conn: psycopg2.extensions.connection, target: Target, now: datetime, kill_file: Path,
           pause_file: Path) -> dict[str, Any]:
    """Feed lag, journal heartbeat, control files and journaled controls, recent executor events."""
    last = _rows(conn, "select max(bar_at) as bar_at, max(created_at) as written_at from decisions"
                       " where strategy = %s and mode = %s", (target.strategy, target.mode))[0]
    snapshot = _rows(conn, "select max(snapshot_at) as at from equity_snapshots where strategy = %s and mode = %s",
                     (target.strategy, target.mode))[0]
    controls = _rows(conn, "select control, engaged, actor, reason, updated_at from executor_controls"
                           " order by control")
    # executor_events has no strategy column: show the executor's own events and the controls pressed for
    # this strategy (the dashboard writes the strategy into the detail).
    events = _rows(conn, "select kind, actor, detail, event_at from executor_events"
                         " where coalesce(detail->>'strategy', %s) = %s order by event_at desc,"
                         " executor_event_id desc limit 15", (target.strategy, target.strategy))
    bar_at, written_at = last["bar_at"], last["written_at"]
    return {
        "now": now.isoformat(),
        "last_bar_at": _iso(bar_at),
        "last_snapshot_at": _iso(snapshot["at"]),
        "last_journal_write_at": _iso(written_at),
        # A replayed session's bars are historical: there the journal heartbeat is the meaningful lag.
        "feed_lag_seconds": (now - bar_at).total_seconds() if bar_at else None,
        "journal_lag_seconds": (now - written_at).total_seconds() if written_at else None,
        "kill_switch": {"engaged": kill_file.exists(), "file": str(kill_file),
                        "note": kill_file.read_text(encoding="utf-8").strip()[:200] if kill_file.exists() else ""},
        "pause_entries": {"engaged": pause_file.exists(), "file": str(pause_file)},
        "journaled_controls": [{**row, "updated_at": _iso(row["updated_at"])} for row in controls],
        "events": [{**row, "event_at": _iso(row["event_at"])} for row in events],
    }
