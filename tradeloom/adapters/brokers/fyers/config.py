"""Fyers adapter configuration: frozen, secrets as SecretStr, SDK log files under `.loom/`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class FyersConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str  # the app id, e.g. "XY12345-100"
    secret_key: SecretStr
    access_token: SecretStr | None = None
    token_file: Path | None = None
    api_root: str = "https://api-t1.fyers.in/api/v3"
    data_root: str = "https://api-t1.fyers.in/data"
    order_socket_url: str = "wss://socket.fyers.in/trade/v3"
    # The symbol master is a public CSV per segment (NSE_CM.csv, ...), outside the SDK.
    symbol_master_root: str = "https://public.fyers.in/sym_details"
    # The SDK writes fyersApi.log / fyersRequests.log / fyersOrderSocket.log here, never the CWD.
    log_dir: Path = Path(".loom/logs/fyers")
    timeout_seconds: float = Field(default=7.0, gt=0)
    orders_per_second: float = Field(default=10.0, gt=0)
    # Also per minute: the venue's published cap (set it to your account's); None: only the per-second one.
    orders_per_minute: int | None = Field(default=200, ge=1)
    reads_per_second: float = Field(default=10.0, gt=0)
    read_retry_attempts: int = Field(default=4, ge=1, le=10)
    backoff_seconds: float = Field(default=0.25, ge=0)
    max_backoff_seconds: float = Field(default=4.0, ge=0)
    # Our instrument keys ("NSE:INFY") → Fyers symbols; unlisted keys get the equity suffix "-EQ".
    symbols: dict[str, str] = Field(default_factory=dict)
