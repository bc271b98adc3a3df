"""The paper broker: the engine's simulated broker behind the broker port, with its state on disk.

Fills come from the same `SimulatedBroker` the backtester uses (same cost, slippage, gap and partial-fill
rules), so a replayed day through the executor trades exactly like the backtest. It accepts bracket legs
natively (`supports_contingent_orders`), as the backtester does. A restart continues the same account: every
placement, cancel and matched bar is one flushed line of an append-only log beside the account file
(`<state>.log`; a bar's line is also fsync'd before its fills are handed out), and `checkpoint` (the trader
calls it at the end of each bar) writes the whole account atomically and empties the log; loading replays
what the log holds after the snapshot, through the same matching. Placing an order used to rewrite the whole
account file (4-10 ms on ext4, growing over the day) inside the decision, and the per-bar rewrite before the
decision made the next write-ahead fsync flush it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from tradeloom.broker import BrokerOrder, BrokerPosition, Funds, OrderCallback
from tradeloom.domain import Fill, IntentPurpose, OrderIntent, OrderState, OrderType, ProductType, Side
from tradeloom.engine.config import BrokerConfig
from tradeloom.engine.simbroker import SimFill, SimulatedBroker, _intent_from_dict, _intent_to_dict
from tradeloom.errors import InputError, InvariantViolation, OrderRejectedError

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
CHECKPOINT_EVERY = 500  # log entries after which `on_bar` snapshots by itself
NS_PER_DAY = 86_400_000_000_000


class PaperBroker:
    name = "paper"
    supports_contingent_orders = True

    def __init__(
        self, keys: Sequence[str], *, cash: float, config: BrokerConfig | None = None, state_path: Path | None = None
    ) -> None:
        self.state_path = state_path
        self._on_order: OrderCallback | None = None
        self._orders: dict[str, BrokerOrder] = {}
        self._intents: dict[str, OrderIntent] = {}
        self._fills: list[Fill] = []
        # The day's fills per order and the cost per instrument, kept as fills arrive: positions and order
        # snapshots are read on every bar and must not walk all of the day's fills.
        self._fills_by_order: dict[str, list[Fill]] = {}
        # Per instrument: (position, average cost) from the fills in order. Adding to a position averages in,
        # reducing it keeps the average, going through flat starts again at the fill price.
        self._cost: dict[str, tuple[int, Decimal]] = {}
        self.sim: SimulatedBroker
        self._sequence = 0  # of the last placement / cancel in the log (the snapshot records the one it includes)
        self._log: TextIO | None = None
        self._logged = 0  # entries in the log since the last snapshot
        self._day: int | None = None  # UTC day of the last matched bar (see `_roll_day`)
        self.last_bar_at_ns: int | None = None  # the last bar matched: a bar is matched once (see `on_bar`)
        if state_path is not None and state_path.exists():
            self._load(state_path)
            if tuple(keys) != self.sim.keys:
                raise InputError(f"paper account {state_path} trades {self.sim.keys}, asked for {tuple(keys)}")
        else:
            self.sim = SimulatedBroker(config or BrokerConfig(), tuple(keys), cash)
            self.save()  # the opening cash is on disk before the first order is logged

    # -- persistence --------------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.sim = SimulatedBroker.from_dict(data["sim"])
        for raw in data["intents"]:
            intent = OrderIntent(
                raw["client_order_id"],
                raw["instrument_key"],
                Side(raw["side"]),
                raw["quantity"],
                OrderType(raw["order_type"]),
                IntentPurpose(raw["purpose"]),
                None if raw["limit_price"] is None else Decimal(raw["limit_price"]),
                None if raw["stop_price"] is None else Decimal(raw["stop_price"]),
                ProductType(raw["product"]),
                raw["parent_client_order_id"],
            )
            self._intents[intent.client_order_id] = intent
        for raw in data["fills"]:
            self._add_fill(
                Fill(
                    raw["client_order_id"],
                    raw["instrument_key"],
                    Side(raw["side"]),
                    raw["quantity"],
                    Decimal(raw["price"]),
                    raw["filled_at_ns"],
                    raw["fill_id"],
                    Decimal(raw["fees"]),
                )
            )
        if "cost" in data:  # the snapshot's own: fills of earlier days are no longer in it to rebuild from
            self._cost = {key: (int(quantity), Decimal(average)) for key, (quantity, average) in data["cost"].items()}
        self._day = data.get("day")
        self.last_bar_at_ns = data.get("last_bar_at_ns")
        self._sequence = int(data.get("log_sequence", 0))
        self._replay(path.with_suffix(".log"))
        for client_id in self._intents:
            self._orders[client_id] = self._snapshot(client_id)

    def _replay(self, log_path: Path) -> None:
        """Apply the placements, cancels and resizes logged after the snapshot, in order. A torn last line (a crash in
        the middle of its write) ends the replay: that order was never confirmed to the caller."""
        if not log_path.exists():
            return
        good = 0  # bytes of whole lines: a torn tail is cut off, or the next append would join it
        for line in log_path.read_bytes().splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no line end")
                entry = json.loads(line)
            except ValueError:
                log.warning("paper account log %s ends in a torn line; replayed up to it", log_path)
                with log_path.open("r+b") as handle:
                    handle.truncate(good)
                break
            good += len(line)
            if int(entry["sequence"]) <= self._sequence:
                continue  # already in the snapshot (a crash between the snapshot and the log's truncation)
            if entry["op"] == "place":
                intent = _intent_from_dict(entry["intent"])
                self.sim.submit(intent)
                self._intents.setdefault(intent.client_order_id, intent)
            elif entry["op"] == "cancel":
                self.sim.cancel(str(entry["client_order_id"]))
            elif entry["op"] == "resize":
                self.sim.resize(str(entry["client_order_id"]), int(entry["quantity"]))
            else:  # a bar: the same matching, so the same fills
                self._match(int(entry["bar_at_ns"]), *(np.array(entry[name], dtype=np.float64)
                                                       for name in ("open", "high", "low", "close", "volume")))
            self._sequence = int(entry["sequence"])
            self._logged += 1

    def _roll_day(self, bar_at_ns: int) -> None:
        """On the first bar of a new (UTC) day, forget the orders that no longer work and the fills of the days
        before, as a real broker's order book and trade book start each day empty (the port's `orders_today`
        and `fills_today`). Positions, cash and each position's average cost carry over; so do working orders
        and their fills. Without this the account, rewritten at every bar, grew with every day traded."""
        day = bar_at_ns // NS_PER_DAY
        if self._day is not None and day > self._day:
            working = {order.client_id for order in self.sim.open_orders()}
            gone = [client_id for client_id in self._intents if client_id not in working]
            for client_id in gone:
                del self._intents[client_id]
                self._orders.pop(client_id, None)
                self._fills_by_order.pop(client_id, None)
            self._fills = [fill for fill in self._fills if fill.client_order_id in working]
            self.sim.forget(gone)
            if gone:
                log.info("paper account: new day, %d finished orders of earlier days dropped", len(gone))
        if self._day is None or day > self._day:
            self._day = day

    def _match(self, bar_at_ns: int, open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray,
               volume: FloatArray) -> list[SimFill]:
        self._roll_day(bar_at_ns)  # here, not in `on_bar`: replaying the log rolls over at the same bar
        self.last_bar_at_ns = bar_at_ns
        fills = self.sim.on_bar(bar_at_ns, open_, high, low, close, volume)
        for sim in fills:
            self._add_fill(sim.fill)
        return fills

    def _append_log(self, entry: dict[str, Any]) -> None:
        if self.state_path is None:
            return
        log_file = self._log_file()
        self._sequence += 1
        self._logged += 1
        log_file.write(json.dumps({"sequence": self._sequence, **entry}) + "\n")
        log_file.flush()  # through to the OS: a process crash loses nothing

    def _log_file(self) -> TextIO:
        if self._log is None:
            if self.state_path is None:
                raise InvariantViolation("the paper broker keeps no log without a state path")
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.state_path.with_suffix(".log").open("a", encoding="utf-8")
        return self._log

    def checkpoint(self) -> None:
        """Write the whole account (the trader calls this at the end of each bar, off the order path, before
        the bar's journal sync)."""
        self.save()

    def save(self) -> None:
        """The whole account, replaced atomically; then the log it now includes is emptied."""
        if self.state_path is None:
            return
        data = {
            "log_sequence": self._sequence,
            "day": self._day,
            "last_bar_at_ns": self.last_bar_at_ns,
            "cost": {key: [quantity, str(average)] for key, (quantity, average) in self._cost.items()},
            "sim": self.sim.to_dict(),
            "intents": [_intent_to_dict(intent) for intent in self._intents.values()],
            "fills": [
                {
                    "client_order_id": f.client_order_id,
                    "instrument_key": f.instrument_key,
                    "side": int(f.side),
                    "quantity": f.quantity,
                    "price": str(f.price),
                    "filled_at_ns": f.filled_at_ns,
                    "fill_id": f.fill_id,
                    "fees": str(f.fees),
                }
                for f in self._fills
            ],
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")  # atomic replace: survives a process crash
        temporary.replace(self.state_path)
        log_file = self._log_file()
        log_file.seek(0)
        log_file.truncate()
        self._logged = 0

    # -- the port -----------------------------------------------------------------------------------------
    def _snapshot(self, client_id: str) -> BrokerOrder:
        intent = self._intents[client_id]
        working = self.sim.working_order(client_id)
        fills = self._fills_by_order.get(client_id, [])
        filled = sum(f.quantity for f in fills)
        state = self.sim.order_state(client_id) or OrderState.REJECTED
        average = (sum(f.price * f.quantity for f in fills) / filled) if filled else None
        quantity = working.quantity if working is not None and working.quantity > 0 else intent.quantity
        return BrokerOrder(
            broker_order_id=f"P-{client_id}",
            client_order_id=client_id,
            instrument_key=intent.instrument_key,
            side=intent.side,
            quantity=max(quantity, filled),
            filled_quantity=filled,
            state=state,
            order_type=intent.order_type,
            product=intent.product,
            limit_price=intent.limit_price,
            stop_price=intent.stop_price,
            average_price=None if average is None else Decimal(average),
        )

    def place(self, intent: OrderIntent) -> BrokerOrder:
        try:
            self.sim.submit(intent)
        except InputError as error:
            raise OrderRejectedError(str(error)) from error
        self._intents.setdefault(intent.client_order_id, intent)
        self._append_log({"op": "place", "intent": _intent_to_dict(intent)})
        order = self._snapshot(intent.client_order_id)
        self._orders[intent.client_order_id] = order
        return order

    def modify(
        self,
        broker_order_id: str,
        *,
        quantity: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        order_type: OrderType | None = None,
    ) -> BrokerOrder:
        """Only a lower quantity (what `fit_protection` asks for); prices and types: cancel and place anew."""
        if quantity is None or (limit_price, stop_price, order_type) != (None, None, None):
            raise OrderRejectedError(
                f"modify {broker_order_id!r}: the paper broker modifies only an order's quantity (down), got "
                f"quantity={quantity!r}, limit_price={limit_price!r}, stop_price={stop_price!r}, "
                f"order_type={order_type!r}: cancel and place a new one to change its price or type")
        client_id = broker_order_id.removeprefix("P-")
        if client_id not in self._intents:
            raise OrderRejectedError(f"modify: no paper order {broker_order_id!r}")
        try:
            if not self.sim.resize(client_id, quantity):
                raise OrderRejectedError(f"modify: paper order {broker_order_id!r} no longer works")
        except InputError as error:
            raise OrderRejectedError(str(error)) from error
        self._append_log({"op": "resize", "client_order_id": client_id, "quantity": quantity})
        return self._refresh(client_id)

    def cancel(self, broker_order_id: str) -> BrokerOrder:
        client_id = broker_order_id.removeprefix("P-")
        if client_id not in self._intents:
            raise OrderRejectedError(f"cancel: no paper order {broker_order_id!r}")
        self.sim.cancel(client_id)
        self._append_log({"op": "cancel", "client_order_id": client_id})
        return self._refresh(client_id)

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self._snapshot(client_order_id) if client_order_id in self._intents else None

    def open_orders(self) -> list[BrokerOrder]:
        return [self._snapshot(o.intent.client_order_id) for o in self.sim.open_orders()]

    def orders_today(self) -> list[BrokerOrder]:
        return [self._snapshot(client_id) for client_id in self._intents]

    def positions(self) -> list[BrokerPosition]:
        held = {key: int(q) for key, q in zip(self.sim.keys, self.sim.positions.tolist(), strict=True) if q}
        return [BrokerPosition(key, ProductType.INTRADAY, quantity, self._cost.get(key, (0, Decimal(0)))[1])
                for key, quantity in held.items()]

    def fills_today(self) -> list[Fill]:
        return list(self._fills)

    def funds(self) -> Funds:
        return Funds(available_cash=Decimal(repr(self.sim.cash)), used_margin=Decimal(0))

    # -- paper only: the feed drives the matching ----------------------------------------------------------
    def set_order_callback(self, callback: OrderCallback | None) -> None:
        self._on_order = callback

    def on_bar(
        self,
        bar_at_ns: int,
        open_: FloatArray,
        high: FloatArray,
        low: FloatArray,
        close: FloatArray,
        volume: FloatArray,
    ) -> list[SimFill]:
        if self.last_bar_at_ns is not None and bar_at_ns <= self.last_bar_at_ns:
            # Shown again (a restart before the trader recorded the bar): matching it again would fill orders
            # decided at its close at its own open.
            log.warning("paper account: bar %d already matched (last %d); not matched again", bar_at_ns,
                        self.last_bar_at_ns)
            return []
        before = {client_id: self.sim.order_state(client_id) for client_id in self._intents}
        self._append_log({"op": "bar", "bar_at_ns": bar_at_ns, "open": open_.tolist(), "high": high.tolist(),
                          "low": low.tolist(), "close": close.tolist(), "volume": volume.tolist()})
        if self.state_path is not None:
            # The exchange's bar is on disk before its fills reach the trader; this is also the data the trader's
            # write-ahead sync would otherwise flush as well (one file system journal): the exchange's I/O stays
            # out of the decision, as a real venue's does.
            os.fdatasync(self._log_file().fileno())
        fills = self._match(bar_at_ns, open_, high, low, close, volume)
        if self._logged >= CHECKPOINT_EVERY:  # nobody checkpoints (a direct user): bound the replay
            self.checkpoint()
        touched = {sim.fill.client_order_id for sim in fills} | {
            client_id for client_id, state in before.items()
            if client_id in self._intents and self.sim.order_state(client_id) != state  # not rolled over
        }
        submitted = {client_id: position for position, client_id in enumerate(self._intents)}
        for client_id in sorted(touched, key=submitted.__getitem__):
            order = self._refresh(client_id)
            if self._on_order is not None:
                self._on_order(order)
        return fills

    def _add_fill(self, fill: Fill) -> None:
        self._fills.append(fill)
        position, average = self._cost.get(fill.instrument_key, (0, Decimal(0)))
        signed = int(fill.side) * fill.quantity
        after = position + signed
        if position == 0 or ((position > 0) != (after > 0) and after != 0):
            average = fill.price  # opened, or reversed through flat: the new position is this fill's
        elif (position > 0) == (signed > 0):
            average = (average * abs(position) + fill.price * fill.quantity) / abs(after)
        self._cost[fill.instrument_key] = (after, average if after else Decimal(0))
        self._fills_by_order.setdefault(fill.client_order_id, []).append(fill)

    def _refresh(self, client_id: str) -> BrokerOrder:
        order = self._snapshot(client_id)
        self._orders[client_id] = order
        return order
