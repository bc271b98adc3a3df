"""Executor settings (pydantic-settings, env prefix TRADELOOM_EXECUTOR_, optional YAML/JSON config file).

Safe defaults: paper trading, small limits. Secrets are SecretStr and only ever read by the adapters.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.engine.config import BrokerConfig, EngineConfig, check_costs_fit_product
from tradeloom.errors import ConfigError
from tradeloom.settings import project_root


class TradingMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"
    REPLAY = "replay"


class BrokerName(StrEnum):
    PAPER = "paper"
    KITE = "kite"
    FYERS = "fyers"


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADELOOM_EXECUTOR_", env_file=".env", extra="ignore",
                                      env_nested_delimiter="__")

    trading_mode: TradingMode = TradingMode.PAPER
    broker: BrokerName = BrokerName.PAPER
    home: Path = Field(default_factory=lambda: project_root() / ".loom")
    state_root: Path | None = None  # journal spool, engine state, paper account, control files; default home/executor
    database_url: str | None = None
    database_name: str = "tradeloom"
    database_role: str = "tradeloom_executor"
    instruments: list[str] = Field(default_factory=list)  # EXCHANGE:SYMBOL; empty = every instrument with bars
    timeframe: str = "1m"
    # "mlflow:<registered name>" loads <name>@champion as ONNX; "baseline:sma_cross" needs no model.
    model: str = "baseline:sma_cross"
    mlflow_tracking_uri: str | None = None
    # A challenger trading on paper beside the champion ("mlflow:<name>@challenger"), journaled as mode 'shadow'.
    shadow_model: str | None = None
    cash: float = 1_000_000.0
    engine: EngineConfig = Field(default_factory=EngineConfig)
    paper: BrokerConfig = Field(default_factory=BrokerConfig)
    # Replays trade only (instrument, day) cells the data gate marked passed (see `tradeloom validate`).
    require_validated: bool = True
    # Bars restored into the online features at start-up: 1,000 one-minute bars (2.7 NSE sessions) fill
    # every default feature, the hourly RSI's 15 hours included.
    warmup_bars: int = Field(default=1000, ge=0)
    stale_feed_seconds: float = Field(default=30.0, gt=0)
    # An unconfirmed placement the broker still does not know after this long never arrived: closed as rejected.
    unconfirmed_grace_seconds: float = Field(default=30.0, gt=0)
    late_tick_grace_seconds: float = Field(default=2.0, ge=0)
    model_poll_bars: int = Field(default=5, ge=1)  # how often (in bars) to look for a moved @champion
    kill_switch_file: Path | None = None
    kill_switch_flattens: bool = False  # on kill: cancel entries and flatten, or keep positions with their stops
    metrics_port: int | None = None  # Prometheus metrics on 127.0.0.1:<port>
    # The premarket DAG's verdict; live trading refuses to start on a red, stale or missing flag.
    health_flag: Path | None = None  # default home/health/premarket.json
    # Broker connections (secrets are SecretStr inside; env: TRADELOOM_EXECUTOR_KITE__API_KEY=..., etc.).
    kite: KiteConfig | None = None
    fyers: FyersConfig | None = None

    @model_validator(mode="after")
    def _live_needs_real_broker(self) -> ExecutorSettings:
        if self.trading_mode is TradingMode.LIVE and self.broker is BrokerName.PAPER:
            raise ConfigError("trading_mode='live' needs broker='kite' or 'fyers' (the paper broker is not live)")
        if self.broker is BrokerName.KITE and self.kite is None:
            raise ConfigError("broker='kite' needs the kite settings (api_key, api_secret, token_file or access_token)")
        if self.broker is BrokerName.FYERS and self.fyers is None:
            raise ConfigError(
                "broker='fyers' needs the fyers settings (client_id, secret_key, token_file or access_token)")
        if self.trading_mode is TradingMode.LIVE and self.model.startswith("baseline:"):
            raise ConfigError(f"trading_mode='live' needs a registered model, got model={self.model!r}")
        check_costs_fit_product(self.engine.product, self.paper.costs)
        return self

    @property
    def state_dir(self) -> Path:
        return (self.state_root or self.home / "executor") / self.engine.strategy

    def kill_switch_path(self) -> Path:
        return self.kill_switch_file or self.state_dir / "KILL"


def load_settings(config: Path | None, **overrides: Any) -> ExecutorSettings:
    """Settings from the environment, then a JSON/YAML config file, then explicit overrides."""
    values: dict[str, Any] = {}
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"--config {config}: file not found")
        text = config.read_text(encoding="utf-8")
        try:
            if config.suffix in {".yaml", ".yml"}:
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"--config {config}: not valid {config.suffix.lstrip('.')}: {error}") from error
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return ExecutorSettings(**values)
    except ValueError as error:
        raise ConfigError(f"executor settings: {error}") from error
