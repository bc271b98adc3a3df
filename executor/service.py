"""The executor service: start-up (settings, journal, broker, model, reconciliation, warm-up) and the loops.

Start-up order matters for money: the journal spool is applied, open orders are re-adopted from the
journal and reconciled with the broker *before* the first new decision.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg2
import psycopg2.extensions

from executor.bars import BarBuilder
from executor.journal import Journal
from executor.metrics import Metrics
from executor.oms import Lineage, OrderManager
from executor.policy import PolicyChampion
from executor.settings import BrokerName, ExecutorSettings, TradingMode
from executor.trader import BarSlice, OnnxChampion, Scorer, SmaCrossScorer, Trader
from tradeloom.adapters.brokers.paper import PaperBroker
from tradeloom.adapters.pgcluster import LocalCluster
from tradeloom.adapters.store import BarMatrix, load_bar_matrix, load_instruments, load_splits_by_key
from tradeloom.broker import Broker, BrokerOrder, MarketDataBroker, Tick
from tradeloom.calendars import session_context
from tradeloom.domain import Instrument, IntentPurpose, OrderIntent, OrderType, Side, Timeframe, client_order_id
from tradeloom.engine.state import Universe
from tradeloom.errors import ConfigError, DatabaseUnavailableError
from tradeloom.features.online import OnlineFeatureEngine
from tradeloom.features.spec import spec_hash
from tradeloom.models.compatibility import ModelCard, ModelRefusedError
from tradeloom.portfolio.sizing_policy import serving_rebalance

log = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
VERDICT_RECHECK_SECONDS = 30.0  # how often a missing premarket verdict is looked for again
NS = 1_000_000_000


def _notify(message: str) -> None:
    """systemd sd_notify (READY=1, WATCHDOG=1, STOPPING=1); a no-op outside systemd."""
    try:
        import sdnotify

        sdnotify.SystemdNotifier().notify(message)
    except (ImportError, OSError):
        pass


@dataclass
class ReplaySummary:
    bars: int = 0
    decisions: int = 0
    orders: int = 0
    fills: int = 0
    start_equity: float = 0.0
    end_equity: float = 0.0
    reconcile: dict[str, int] = field(default_factory=dict)
    step_ms: list[float] = field(default_factory=list)


class ExecutorService:
    def __init__(self, settings: ExecutorSettings, *, broker: Broker | None = None,
                 feed: MarketDataBroker | None = None) -> None:
        self.settings = settings
        self.stop_requested = threading.Event()
        self.metrics = Metrics(settings.metrics_port)
        self.timeframe = Timeframe(settings.timeframe)
        self.journal = Journal(settings.state_dir / "journal", self._connect, strategy=settings.engine.strategy,
                               mode=settings.trading_mode.value)
        conn = self._connect()
        try:
            keys = settings.instruments or None
            self.instruments: list[Instrument] = load_instruments(conn, keys)
        finally:
            conn.close()
        if not self.instruments:
            raise ConfigError("no instruments to trade: set instruments=[...] or ingest some first")
        self.keys = tuple(instrument.key for instrument in self.instruments)
        self.universe = Universe.of(self.instruments)
        self.broker = broker or self._make_broker()
        self.orders = OrderManager(self.broker, self.journal, entries_allowed=self._entries_allowed,
                                   unconfirmed_grace_seconds=settings.unconfirmed_grace_seconds)
        self.features = OnlineFeatureEngine(self.keys, self.timeframe.value)
        self.scorer = self._load_scorer()
        self.trader = Trader(
            universe=self.universe, config=settings.engine, broker=self.broker, orders=self.orders,
            journal=self.journal, features=self.features, scorer=self.scorer, mode=settings.trading_mode.value,
            cash=settings.cash, state_path=settings.state_dir / "engine-state.json",
        )
        self.reconcile_report: dict[str, int] = {}
        self.shadow = self._make_shadow()
        self.feed = feed
        self.bars = BarBuilder(self.keys, grace_s=settings.late_tick_grace_seconds)
        self._inbox: queue.Queue[Tick | BrokerOrder] = queue.Queue()
        self._feed_stale = False
        # The session day whose green premarket verdict live trading runs on (see `check_session_verdict`).
        self._verdict_day: date | None = None
        self._verdict_checked_ns = 0
        self.verdict_missing = False
        self._retired_day: date | None = None
        # Set by the SIGUSR1 handler, acted on by the loop: a handler runs between any two bytecodes (inside a
        # broker call too), where cancelling would judge an order whose placement is still in flight.
        self.kill_requested = threading.Event()
        self._last_poll_ns = 0
        self._bad_seen: dict[str, int] = {}
        # Splits of the traded instruments (key, ex-date ns, ratio), read at start-up and on each new day; a
        # split effective while the service runs re-warms the features from the back-adjusted store.
        self._splits: list[tuple[str, int, float]] = []
        self._split_rewarm_pending = False

    # -- wiring ---------------------------------------------------------------------------------------------
    def _connect(self) -> psycopg2.extensions.connection:
        url = self.settings.database_url or LocalCluster(self.settings.home / "pg").url(
            self.settings.database_role, self.settings.database_name)
        try:
            return psycopg2.connect(url, connect_timeout=3, application_name="tradeloom-executor")
        except psycopg2.OperationalError as error:
            raise DatabaseUnavailableError(f"executor database unreachable: {str(error).strip()[:200]}") from error

    def _make_broker(self) -> Broker:
        settings = self.settings
        if settings.broker is BrokerName.PAPER:
            return PaperBroker(self.keys, cash=settings.cash, config=settings.paper,
                               state_path=settings.state_dir / "paper-account.json")
        if settings.broker is BrokerName.KITE and settings.kite is not None:
            from tradeloom.adapters.brokers.kite.execution import KiteBroker

            return KiteBroker(settings.kite)
        if settings.broker is BrokerName.FYERS and settings.fyers is not None:
            from tradeloom.adapters.brokers.fyers.execution import FyersBroker

            return FyersBroker(settings.fyers)
        raise ConfigError(f"broker={settings.broker.value!r} has no settings")

    def _registry(self) -> Any:
        from tradeloom.adapters.registry import RegistryTarget

        uri = self.settings.mlflow_tracking_uri or LocalCluster(self.settings.home / "pg").sqlalchemy_url(
            "tradeloom_owner", "mlflow")
        return RegistryTarget(uri, self.settings.home / "mlartifacts")

    def _load_scorer(self, model: str | None = None, alias: str = "champion") -> Scorer:
        model = model or self.settings.model
        if model.startswith("baseline:"):
            if model != "baseline:sma_cross":
                raise ConfigError(f"model={model!r}: the only baseline is 'baseline:sma_cross'")
            return SmaCrossScorer(len(self.keys))
        if not model.startswith("mlflow:"):
            raise ConfigError(f"model={model!r}: expected 'mlflow:<registered name>' or 'baseline:sma_cross'")
        from tradeloom.adapters.registry import load_scorer

        loaded, scorer = load_scorer(self._registry(), model.removeprefix("mlflow:"), self.features.spec.names,
                                     spec_hash(), alias=alias)
        log.info("loaded model %s version %s (@%s, %s)", loaded.name, loaded.version, alias, loaded.card.output_kind)
        if loaded.card.output_kind == "target_weight":
            return self._policy(loaded.card, scorer, loaded.name, loaded.version)
        return OnnxChampion(scorer, loaded.name, loaded.version, len(self.keys), len(self.features.spec.names))

    def _policy(self, card: ModelCard, scorer: object, name: str, version: str) -> PolicyChampion:
        """A sizing policy trades with the operator's risk limits and the sizing parameters it was evaluated
        with; one that may go short is refused unless the engine allows shorts."""
        engine = self.settings.engine
        if card.allow_short and not engine.signal.allow_short:
            raise ModelRefusedError(f"model {name!r} version {version}: allow_short=True, but the executor's "
                                    f"engine.signal.allow_short is False; expected a long-only policy")
        if card.rebalance is not None and card.rebalance.risk != engine.risk:
            log.warning("policy %s v%s was evaluated under other risk limits than the executor's; the "
                        "executor's apply", name, version)
        rebalance = serving_rebalance(card.rebalance, strategy=engine.strategy, product=engine.product,
                                      risk=engine.risk)
        return PolicyChampion(scorer, card, name, version, rebalance)

    def maybe_reload_model(self) -> bool:
        """Hot reload at a safe point (between bars): when @champion moved, load and check the new version and
        switch to it for the next bar, keeping the feature history. A refused model leaves the old one trading."""
        model = self.settings.model
        if not model.startswith("mlflow:"):
            return False
        from tradeloom.adapters.registry import alias_version
        from tradeloom.models.compatibility import ModelRefusedError

        version = alias_version(self._registry(), model.removeprefix("mlflow:"), "champion")
        if version is None or version == self.scorer.version:
            return False
        previous = self.scorer
        try:
            fresh = self._load_scorer()
        except (ModelRefusedError, ConfigError) as error:
            log.error("@champion moved to version %s but it was refused: %s", version, error)
            self.journal.record_event("model_refused", {"version": version, "error": str(error)[:500]})
            return False
        if isinstance(fresh, OnnxChampion) and isinstance(previous, OnnxChampion) \
                and fresh.rows.shape[2] == previous.rows.shape[2]:
            keep = min(fresh.rows.shape[1], previous.rows.shape[1])
            fresh.rows[:, -keep:] = previous.rows[:, -keep:]
        self.scorer = self.trader.scorer = fresh
        log.warning("model switch: %s %s -> %s", fresh.name, previous.version, fresh.version)
        self.journal.record_event("model_switch", {"model": fresh.name, "from": previous.version,
                                                   "to": fresh.version})
        return True

    def _make_shadow(self) -> Trader | None:
        """A challenger trading on paper beside the champion, on the same bars, journaled as mode 'shadow'."""
        if self.settings.shadow_model is None:
            return None
        model, _, alias = self.settings.shadow_model.partition("@")
        scorer = self._load_scorer(model, alias or "challenger")
        journal = Journal(self.settings.state_dir / "journal", self._connect, strategy=self.settings.engine.strategy,
                          mode="shadow")
        broker = PaperBroker(self.keys, cash=self.settings.cash, config=self.settings.paper,
                             state_path=self.settings.state_dir / "shadow-paper-account.json")
        return Trader(universe=self.universe, config=self.settings.engine, broker=broker,
                      orders=OrderManager(broker, journal), journal=journal,
                      features=OnlineFeatureEngine(self.keys, self.timeframe.value), scorer=scorer, mode="shadow",
                      cash=self.settings.cash, state_path=self.settings.state_dir / "shadow-engine-state.json")

    def _trade(self, bar: BarSlice) -> None:
        """The champion's decision for this bar, then the shadow's (which can never affect the champion)."""
        if self.trader.bars_done and self.trader.bars_done % self.settings.model_poll_bars == 0:
            self.maybe_reload_model()
        self.trader.on_bar_close(bar)
        if self.shadow is not None and bar.bar_at_ns > self.shadow.last_bar_at_ns:
            try:
                self.shadow.on_bar_close(bar)
                self.shadow.journal.flush()
            except Exception:  # the shadow is advisory: log and carry on trading the champion
                log.exception("shadow trader failed on bar %s", bar.bar_at_ns)

    def _entries_allowed(self) -> bool:
        return self.journal.db_healthy and not self.trader.kill_switch and not self.trader.entries_paused

    def check_session_verdict(self, now_ns: int) -> None:
        """A live service that runs into a new session trades it only on that session's green premarket
        verdict, as a fresh start would: until the flag says so, no new entries (working and protective
        orders are left alone). The flag is read again every `VERDICT_RECHECK_SECONDS` while it is missing."""
        today = datetime.fromtimestamp(now_ns / NS, tz=IST).date()
        if today == self._verdict_day or now_ns - self._verdict_checked_ns < VERDICT_RECHECK_SECONDS * NS:
            return
        self._verdict_checked_ns = now_ns
        try:
            self.check_health_flag(today)
        except ConfigError as error:
            if not self.verdict_missing:
                log.error("new session %s without a green premarket verdict: no new entries (%s)", today, error)
                self.journal.record_event("premarket_verdict_missing", {"session_date": today.isoformat(),
                                                                        "error": str(error)[:500]})
            self.verdict_missing = True
            return
        log.warning("premarket verdict for %s is green: entries allowed", today)
        self.journal.record_event("premarket_verdict", {"session_date": today.isoformat()})
        self._verdict_day, self.verdict_missing = today, False

    # -- start-up -------------------------------------------------------------------------------------------
    def check_health_flag(self, today: date | None = None) -> None:
        """Live trading starts only on a green premarket verdict for today's session (Asia/Kolkata)."""
        path = self.settings.health_flag or self.settings.home / "health" / "premarket.json"
        today = today or datetime.now(tz=IST).date()
        try:
            verdict = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"premarket health flag {path} unreadable ({error}): run the premarket DAG") from error
        if verdict.get("status") != "green" or verdict.get("session_date") != today.isoformat():
            failed = [name for name, check in (verdict.get("checks") or {}).items() if not check.get("ok")]
            raise ConfigError(f"premarket health flag {path} is {verdict.get('status')!r} for "
                              f"{verdict.get('session_date')!r} (today {today}); failed checks: {failed}")

    def start(self) -> dict[str, int]:
        """Journal spool applied, orders adopted and reconciled with the broker: before any decision."""
        if self.settings.trading_mode is TradingMode.LIVE:
            self.check_health_flag()
            self._verdict_day = datetime.now(tz=IST).date()
        self.refresh_splits()
        orders, fill_ids = self.journal.load_orders()
        self.orders.adopt(orders, fill_ids)
        self.reconcile_report = self.orders.reconcile()
        # A sizing policy's book has no protective stops (it was evaluated without): restoring one would
        # leave a stop the portfolio step never manages.
        self.reconcile_report["protective_stops_restored"] = (
            0 if isinstance(self.scorer, PolicyChampion) else self.ensure_protection())
        self.journal.flush()
        self.journal.record_event("start", {"mode": self.settings.trading_mode.value, "model": self.scorer.name,
                                            "version": self.scorer.version, "reconcile": self.reconcile_report})
        log.info("reconciled with %s: %s", self.broker.name, self.reconcile_report)
        return self.reconcile_report

    def ensure_protection(self) -> int:
        """Give every broker position without an open protective stop one, at start-up.

        A crash between an entry's send and its stop leg's journal record leaves a position naked. The
        restored stop gets the id the engine itself will use when it re-decides that bar
        (strategy, instrument, entry bar, stop_loss), so the engine's own stop is then refused as a duplicate.
        """
        stops = self.settings.engine.stops
        if not stops.has_stop:
            return 0
        restored = 0
        ticks = dict(zip(self.universe.keys, self.universe.tick_size, strict=True))
        for position in self.broker.positions():
            if position.quantity == 0 or position.instrument_key not in ticks:
                continue
            covered = sum(
                order.intent.quantity - order.filled_quantity for order in self.orders.open_orders()
                if order.intent.instrument_key == position.instrument_key
                and order.intent.purpose is IntentPurpose.STOP_LOSS and int(order.intent.side) * position.quantity < 0
            )
            if covered >= abs(position.quantity):
                continue
            entries = [o for o in self.orders.orders.values() if o.intent.instrument_key == position.instrument_key
                       and o.intent.purpose is IntentPurpose.ENTRY and o.filled_quantity > 0]
            bar = max((o.lineage.bar_at_ns or 0 for o in entries), default=self.trader.last_bar_at_ns)
            leg = 0
            strategy = self.settings.engine.strategy
            while self.orders.known(client_order_id(strategy, position.instrument_key, bar, IntentPurpose.STOP_LOSS,
                                                    leg)):
                leg += 1
            client_id = client_order_id(strategy, position.instrument_key, bar, IntentPurpose.STOP_LOSS, leg)
            side = Side.SELL if position.quantity > 0 else Side.BUY
            fraction = stops.stop_loss_pct or 0.05
            tick = Decimal(str(ticks[position.instrument_key]))
            raw = position.average_price * (Decimal(1) - Decimal(str(fraction)) * Decimal(-int(side)))
            price = (raw / tick).to_integral_value(ROUND_FLOOR if side is Side.SELL else ROUND_CEILING) * tick
            intent = OrderIntent(client_id, position.instrument_key, side, abs(position.quantity) - covered,
                                 OrderType.STOP, IntentPurpose.STOP_LOSS, stop_price=price,
                                 product=self.settings.engine.product)
            log.warning("restoring a protective stop for naked %s position %s at %s", position.instrument_key,
                        position.quantity, price)
            self.orders.submit(intent, Lineage(self.settings.engine.strategy, self.settings.trading_mode.value, bar,
                                               "reconciliation", "restore"))
            restored += 1
        return restored

    def refresh_splits(self) -> None:
        """Re-read the traded instruments' splits; the database being down keeps the list already read."""
        try:
            conn = self._connect()
            try:
                self._splits = load_splits_by_key(conn, self.keys)
            finally:
                conn.close()
        except (psycopg2.Error, DatabaseUnavailableError) as error:
            log.warning("splits not refreshed (database unavailable: %s); using the %d already known",
                        str(error).strip()[:200], len(self._splits))

    def apply_splits(self, bar_at_ns: int) -> bool:
        """Before trading the bar at `bar_at_ns`: when a split took effect since the last bar the features saw,
        the online features and scorer windows (and the engine's price levels) hold pre-split prices, and the
        first post-split bar would look like a crash. They are rebuilt from the stored bars, back-adjusted as
        at start-up. Until that succeeds (the store unreachable) entries stay paused. True when re-warmed."""
        seen = int(self.features.last_bar_at.max())
        due = [(key, ratio) for key, ex_at_ns, ratio in self._splits if seen < ex_at_ns <= bar_at_ns]
        if not self.features.bar_count.max() or not (due or self._split_rewarm_pending):
            return False
        self._split_rewarm_pending = True
        if not self.journal.flush():  # the bars this process stored must reach the table the warm-up reads
            log.error("split effective at bar %s (%s): the store is unreachable, so the features cannot be "
                      "re-warmed; entries stay paused until it is", bar_at_ns, due)
            return False
        warm = self.settings.warmup_bars
        traders = [self.trader] + ([self.shadow] if self.shadow is not None else [])
        fresh = [OnlineFeatureEngine(self.keys, self.timeframe.value) for _ in traders]
        try:
            history = self._stored_bars(bar_at_ns, warm)
        except (psycopg2.Error, DatabaseUnavailableError) as error:
            log.error("split effective at bar %s: re-warm failed (%s); entries stay paused", bar_at_ns,
                      str(error).strip()[:200])
            return False
        index = {key: i for i, key in enumerate(self.keys)}
        for trader, engine in zip(traders, fresh, strict=True):
            trader.features = engine
            reset = getattr(trader.scorer, "reset", None)
            if reset is not None:
                reset()
            trader.rescale_prices({index[key]: ratio for key, ratio in due})
        self.features = self.trader.features
        self.warm_up(history)
        self._split_rewarm_pending = False
        log.warning("split effective at bar %s for %s: features re-warmed from %d stored bars, back-adjusted",
                    bar_at_ns, ", ".join(f"{key} x{ratio:g}" for key, ratio in due) or "(retried)",
                    len(history.bar_at_ns))
        self.journal.record_event("split_rewarm", {"bar_at_ns": bar_at_ns, "bars": len(history.bar_at_ns),
                                                   "splits": [{"instrument_key": k, "ratio": r} for k, r in due]})
        return True

    def _stored_bars(self, until_ns: int, warm: int) -> BarMatrix:
        """The last `warm` stored bars before `until_ns`, back-adjusted for splits."""
        # Far enough back to find `warm` bars across a weekend and a holiday (an overnight gap alone is 17.75
        # hours on NSE: 3x the bars' span from a session's open reached none of the previous session).
        lookback_ns = max(warm * self.timeframe.seconds * 3, 7 * 86_400) * NS
        conn = self._connect()
        try:
            history = load_bar_matrix(conn, self.timeframe, self.keys, until_ns - lookback_ns, until_ns)
        finally:
            conn.close()
        keep = slice(max(len(history.bar_at_ns) - warm, 0), None)
        return BarMatrix(history.keys, history.bar_at_ns[keep], history.open[keep], history.high[keep],
                         history.low[keep], history.close[keep], history.volume[keep])

    def warm_up_from_database(self, until_ns: int, warmup_bars: int | None = None) -> int:
        """Restore the online features and the scorers' windows from the last `warmup_bars` stored bars before
        `until_ns`, back-adjusted for splits as the training data is: start-up, before the first decision (in
        replay and live alike). Returns the bars fed; none once this process has seen bars."""
        warm = self.settings.warmup_bars if warmup_bars is None else warmup_bars
        if not warm or self.trader.bars_done or self.features.bar_count.max():
            return 0
        history = self._stored_bars(until_ns, warm)
        self.warm_up(history)
        fed = len(history.bar_at_ns)
        log.info("online features warmed up from %d stored bars before %s", fed,
                 datetime.fromtimestamp(until_ns / NS, tz=UTC).isoformat())
        if fed < warm:
            log.warning("only %d of the %d warm-up bars are stored: features with longer windows start partial",
                        fed, warm)
        return fed

    def warm_up(self, matrix: BarMatrix) -> None:
        """Feed bars before the session into the online features and the scorer, without trading."""
        traders = [self.trader] + ([self.shadow] if self.shadow is not None else [])
        for t in range(len(matrix.bar_at_ns)):
            for trader in traders:
                features = trader.features.step(int(matrix.bar_at_ns[t]), matrix.open[t], matrix.high[t],
                                                matrix.low[t], matrix.close[t], matrix.volume[t])
                trader.scorer.score(features, matrix.close[t])

    def check_controls(self) -> None:
        if self.kill_requested.is_set() and not self.trader.kill_switch:
            self.engage_kill_switch("signal", "SIGUSR1")
        kill_file = self.settings.kill_switch_path()
        engaged = kill_file.exists()
        if engaged and not self.trader.kill_switch:
            self.engage_kill_switch("file", kill_file.read_text(encoding="utf-8").strip()[:200])
        pause_file = self.settings.state_dir / "PAUSE"
        self.trader.entries_paused = pause_file.exists()

    def engage_kill_switch(self, actor: str, reason: str = "") -> None:
        """Stop entries; cancel working entries; flatten or keep protective stops per config."""
        self.trader.kill_switch = True
        log.error("kill switch engaged by %s: %s", actor, reason)
        self.journal.set_control("kill_switch", True, actor, reason)
        self.journal.record_event("kill_switch", {"reason": reason}, actor=actor)
        for order in self.orders.open_orders():
            if order.intent.purpose.value in {"entry"}:
                self.orders.cancel(order.client_order_id)
        self.metrics.kill_switch.set(1)

    # -- loops ----------------------------------------------------------------------------------------------
    def bar_slice(self, matrix: BarMatrix, t: int) -> BarSlice:
        bar_at = int(matrix.bar_at_ns[t])
        day, minutes = session_context(self.instruments, bar_at, self.timeframe.seconds)
        source = "replay:batches=" + ",".join(str(b) for b in matrix.ingest_batches[:5])
        return BarSlice(bar_at, matrix.open[t], matrix.high[t], matrix.low[t], matrix.close[t], matrix.volume[t],
                        session_day=day, minutes_to_close=minutes, source=source)

    def run_replay(self, start: datetime, end: datetime, *, warmup_bars: int | None = None,
                   speed: float = 0.0, require_validated: bool | None = None) -> ReplaySummary:
        """Drive the service from stored bars (paper broker, accelerated: `speed` seconds between bars)."""
        if self.settings.trading_mode is TradingMode.LIVE:
            raise ConfigError("replay runs with trading_mode='replay' or 'paper', never 'live'")
        start_ns, end_ns = int(start.timestamp() * NS), int(end.timestamp() * NS)
        conn = self._connect()
        try:
            gate = self.settings.require_validated if require_validated is None else require_validated
            matrix = load_bar_matrix(conn, self.timeframe, self.keys, start_ns, end_ns, require_validated=gate)
        finally:
            conn.close()
        self.warm_up_from_database(start_ns, warmup_bars)
        summary = ReplaySummary(reconcile=dict(self.reconcile_report))
        positions, cash, _ = self.trader.portfolio()
        summary.start_equity = cash + float(np.nansum(positions * np.nan_to_num(matrix.close[0]))) if len(
            matrix.bar_at_ns) else cash
        self._install_signals()
        _notify("READY=1")
        for t in range(len(matrix.bar_at_ns)):
            if self.stop_requested.is_set():
                break
            self.check_controls()
            bar = self.bar_slice(matrix, t)
            if bar.bar_at_ns <= int(self.features.last_bar_at.max()):
                continue  # this process has already seen the bar
            if bar.bar_at_ns <= self.trader.last_bar_at_ns:
                # Decided before a restart: only bring the features and the scorers up to date.
                for trader in [self.trader] + ([self.shadow] if self.shadow is not None else []):
                    if bar.bar_at_ns <= trader.last_bar_at_ns:
                        features = trader.features.step(bar.bar_at_ns, bar.open, bar.high, bar.low, bar.close,
                                                        bar.volume)
                        trader.scorer.score(features, bar.close)
                continue
            self._trade(bar)
            summary.bars += 1
            summary.step_ms.append(self.trader.last_step_seconds * 1000)
            self.metrics.observe_step(self.trader.last_step_seconds)
            if t % 5 == 0:
                self.orders.poll()
            self.journal.flush()
            self.metrics.update(self.orders, self.trader, self.journal)
            _notify("WATCHDOG=1")
            if speed:
                time.sleep(speed)
        self.journal.flush()
        summary.decisions = summary.bars
        summary.orders = len(self.orders.orders)
        summary.fills = len(self.broker.fills_today())
        positions, cash, _ = self.trader.portfolio()
        last = matrix.close[-1] if len(matrix.bar_at_ns) else np.zeros(len(self.keys))
        marks = np.where(np.isfinite(last), last, self.trader.state.last_close)
        summary.end_equity = cash + float(np.nansum(positions * np.nan_to_num(marks)))
        return summary

    # -- live ---------------------------------------------------------------------------------------------
    def run_live(self, *, clock: Callable[[], int] = time.time_ns, max_seconds: float | None = None) -> None:
        """Ticks -> one-minute bars -> the engine, until SIGTERM (or `max_seconds`)."""
        feed = self.feed or (self.broker if isinstance(self.broker, MarketDataBroker) else None)
        if feed is None:
            raise ConfigError("live trading needs a market data feed (broker 'kite' or a feed=...)")
        self.warm_up_from_database(clock())
        feed.stream(self.keys, on_order=self._inbox.put, on_tick=self._inbox.put)
        self._install_signals()
        _notify("READY=1")
        started = clock()
        try:
            while not self.stop_requested.is_set():
                self.live_cycle(clock())
                _notify("WATCHDOG=1")
                if max_seconds is not None and clock() - started > max_seconds * NS:
                    break
                self.stop_requested.wait(0.2)
        finally:
            feed.stop_stream()

    def live_cycle(self, now_ns: int) -> int:
        """One pass of the live loop: drain ticks and order updates, close due bars and trade them.
        Returns the number of bars traded. Callbacks only enqueue; all state changes happen here."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Tick):
                self.bars.on_tick(item, now_ns)
            else:
                self.orders.on_update(item)
        for reason, count in self.bars.rejected.items():
            self.metrics.bad_ticks.labels(reason=reason).inc(count - self._bad_seen.get(reason, 0))
            self._bad_seen[reason] = count
        stale = self.bars.feed_is_stale(now_ns, self.settings.stale_feed_seconds)
        if stale != self._feed_stale:
            self._feed_stale = stale
            self.journal.record_event("feed_stale" if stale else "feed_recovered",
                                      {"last_tick_ns": self.bars.last_tick_wall_ns})
            log.warning("feed %s", "stale: no new entries" if stale else "recovered")
        self.metrics.feed_lag.set((now_ns - self.bars.last_tick_wall_ns) / NS if self.bars.last_tick_wall_ns else 0)
        self.check_controls()
        if self.settings.trading_mode is TradingMode.LIVE:
            self.check_session_verdict(now_ns)
        today = datetime.fromtimestamp(now_ns / NS, tz=IST).date()
        if today != self._retired_day:  # a new day: keep in memory what a restart would load (the last day's)
            if self._retired_day is not None:
                retired = self.orders.retire(decided_before_ns=now_ns - 86_400 * NS)
                log.info("new day %s: %d finished orders of earlier days retired from memory", today, retired)
                self.refresh_splits()
            self._retired_day = today
        self.trader.entries_paused = self.trader.entries_paused or stale or self.verdict_missing
        traded = 0
        for closed in self.bars.close_due(now_ns):
            self.apply_splits(closed.bar_at_ns)
            self.trader.entries_paused = self.trader.entries_paused or self._split_rewarm_pending
            for i, key in enumerate(self.keys):
                if np.isfinite(closed.close[i]):
                    self.journal.record_bar(key, closed.bar_at_ns, (float(closed.open[i]), float(closed.high[i]),
                                            float(closed.low[i]), float(closed.close[i]), float(closed.volume[i])),
                                            f"live:{self.broker.name}")
            day, minutes = session_context(self.instruments, closed.bar_at_ns, 60)
            self._trade(BarSlice(closed.bar_at_ns, closed.open, closed.high, closed.low, closed.close,
                                 closed.volume, session_day=day, minutes_to_close=minutes,
                                 source=f"live:{self.broker.name}"))
            self.metrics.observe_step(self.trader.last_step_seconds)
            traded += 1
        if now_ns - self._last_poll_ns > 10 * NS:  # polling: the fallback to the order stream
            self.orders.poll()
            self._last_poll_ns = now_ns
        self.journal.flush()
        self.metrics.update(self.orders, self.trader, self.journal)
        return traded

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def _stop(signum: int, frame: FrameType | None) -> None:
            del frame
            log.warning("signal %s: stopping after the current bar", signum)
            _notify("STOPPING=1")
            self.stop_requested.set()

        def _kill(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            self.kill_requested.set()  # engaged by `check_controls` at the loop's next pass

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGUSR1, _kill)

    def close(self) -> None:
        self.journal.record_event("stop", {"bars": self.trader.bars_done})
        self.journal.close()


def describe_day(service: ExecutorService) -> dict[str, Any]:
    """The day's orders, fills, PnL and the lineage of one order, read back from the journal."""
    conn = service._connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "select client_order_id, instrument_key, side, quantity, filled_quantity, order_type, purpose, state,"
                " average_price, model_name, model_version, feature_snapshot_hash, bar_at from orders"
                " where strategy = %s and mode = %s order by created_at, client_order_id",
                (service.settings.engine.strategy, service.settings.trading_mode.value),
            )
            orders = cur.fetchall()
            cur.execute("select count(*), coalesce(sum(fees), 0) from fills f join orders o using (client_order_id)"
                        " where o.strategy = %s and o.mode = %s",
                        (service.settings.engine.strategy, service.settings.trading_mode.value))
            fills = cur.fetchone()
    finally:
        conn.close()
    return {"orders": orders, "fills": fills, "at": datetime.now(tz=UTC).isoformat()}


def default_paths(settings: ExecutorSettings) -> dict[str, Path]:
    return {"state": settings.state_dir, "kill": settings.kill_switch_path(), "pause": settings.state_dir / "PAUSE"}
