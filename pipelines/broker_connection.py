"""Which broker the batch side talks to, with what credentials, and the adapter built from that.

Only the live venv (`.loom/venv-live`) holds the broker SDKs: the Airflow tasks that call this run there.
Secrets are SecretStr inside the adapters' configs and never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tradeloom.adapters.brokers.fyers.config import FyersConfig
from tradeloom.adapters.brokers.kite.config import KiteConfig
from tradeloom.errors import ConfigError

if TYPE_CHECKING:
    from tradeloom.adapters.brokers.fyers.execution import FyersBroker
    from tradeloom.adapters.brokers.kite.execution import KiteBroker

BrokerName = Literal["paper", "kite", "fyers"]
BROKERS: tuple[str, ...] = ("kite", "fyers")


class BrokerSettings(BaseSettings):
    """Env: TRADELOOM_BROKER_NAME=kite, TRADELOOM_BROKER_KITE__API_KEY=..., TRADELOOM_BROKER_KITE__API_SECRET=...,
    TRADELOOM_BROKER_KITE__TOKEN_FILE=.loom/secrets/kite_token.json (written by `python -m executor login kite`)."""

    model_config = SettingsConfigDict(env_prefix="TRADELOOM_BROKER_", env_file=".env", extra="ignore",
                                      env_nested_delimiter="__")

    name: BrokerName = "paper"
    kite: KiteConfig | None = None
    fyers: FyersConfig | None = None
    # EXCHANGE:SYMBOL keys to refresh and ingest; empty = every equity the master lists (refresh) and every
    # instrument carrying the broker's token (ingest).
    universe: list[str] = Field(default_factory=list)
    # Kite exchanges / Fyers symbol-master segments the instrument refresh reads.
    kite_exchanges: list[str] = Field(default_factory=lambda: ["NSE"])
    fyers_segments: list[str] = Field(default_factory=lambda: ["NSE_CM"])

    @model_validator(mode="after")
    def _credentials_for_the_chosen_broker(self) -> BrokerSettings:
        if self.name == "kite" and self.kite is None:
            raise ConfigError("broker name='kite' needs TRADELOOM_BROKER_KITE__API_KEY, __API_SECRET and "
                              "__TOKEN_FILE (or __ACCESS_TOKEN)")
        if self.name == "fyers" and self.fyers is None:
            raise ConfigError("broker name='fyers' needs TRADELOOM_BROKER_FYERS__CLIENT_ID, __SECRET_KEY and "
                              "__TOKEN_FILE (or __ACCESS_TOKEN)")
        return self


def load_broker_settings(name: str | None = None) -> BrokerSettings:
    """Settings from the environment; `name` (a DAG param) overrides TRADELOOM_BROKER_NAME."""
    if name is not None and name not in ("paper", *BROKERS):
        raise ConfigError(f"broker={name!r}; expected one of paper, {', '.join(BROKERS)}")
    try:
        return BrokerSettings(name=name) if name is not None else BrokerSettings()  # type: ignore[arg-type]
    except ValueError as error:
        # pydantic's message lists field names and types, never the secret values (SecretStr).
        raise ConfigError(f"broker settings: {error}") from error


def connect(settings: BrokerSettings) -> KiteBroker | FyersBroker:
    """The SDK adapter for the configured broker (imports the SDK: live venv only)."""
    if settings.name == "kite" and settings.kite is not None:
        from tradeloom.adapters.brokers.kite.execution import KiteBroker

        return KiteBroker(settings.kite)
    if settings.name == "fyers" and settings.fyers is not None:
        from tradeloom.adapters.brokers.fyers.execution import FyersBroker

        return FyersBroker(settings.fyers)
    raise ConfigError(f"broker name={settings.name!r} has no broker API to connect to; expected kite or fyers")
